"""A loopback test double of the AWS IoT Greengrass v2 REST API (not an emulator).

``running_greengrass_double()`` serves, on 127.0.0.1 and a free port, the greengrassv2
operations the fleet backend uses: CreateDeployment, ListDeployments, GetDeployment,
CancelDeployment and ListEffectiveDeployments. Routes, member locations (URI, query
string, JSON body) and every input are taken from and checked against botocore's service
model for greengrassv2: the operation, required members, unknown members, member types,
string length/pattern/enum and number ranges. An invalid request gets the API's own error
shape (HTTP 400, ``x-amzn-ErrorType: ValidationException``, ``{"message", "reason",
"fields"}``), so a boto3 client pointed at it with ``endpoint_url`` raises the same
``ClientError`` it would against AWS. Requests must carry a SigV4 ``Authorization`` header.

What the double does not do: run IoT jobs or know thing-group membership (that lives in
the IoT API, tested against moto). Tests set a device's execution status of a deployment
with ``record_execution``, register core devices with ``add_core_device`` (ListCoreDevices,
ListInstalledComponents, paginated as the API is) and ``tests.support.platform_devices``
plays the devices applying deployments. ``throttle(n)`` answers the next ``n`` requests with
the API's ``ThrottlingException`` (HTTP 429), ``outage`` every request with HTTP 503.
``requests`` logs every accepted call as (operation, params).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import botocore.session

from tests.support.http_double import Respond, serving

OPERATIONS = (
    "CreateDeployment",
    "ListDeployments",
    "GetDeployment",
    "CancelDeployment",
    "ListEffectiveDeployments",
    "ListInstalledComponents",
    "ListCoreDevices",
)
ACCOUNT = "123456789012"
REGION = "us-east-1"
_SIGV4 = re.compile(r"^AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/[a-z0-9-]+/greengrass/aws4_request, ")


class ApiError(Exception):
    """An error response in the API's shape."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.body = status, code, {"message": message, **extra}


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(
        400,
        "ValidationException",
        f"{name}: {message}",
        reason="FIELD_VALIDATION_FAILED",
        fields=[{"name": name, "message": message}],
    )


def validate(shape: Any, value: Any, path: str) -> None:
    """Check ``value`` against a botocore shape; raise a ValidationException naming the member."""
    kind, meta = shape.type_name, shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            raise _invalid(path, f"expected an object ({shape.name})")
        for name in shape.required_members:
            if value.get(name) is None:
                raise _invalid(f"{path}.{name}".lstrip("."), "is required")
        for name, item in value.items():
            if name not in shape.members:
                raise _invalid(f"{path}.{name}".lstrip("."), f"is not a member of {shape.name}")
            validate(shape.members[name], item, f"{path}.{name}".lstrip("."))
        return
    if kind == "map":
        if not isinstance(value, dict):
            raise _invalid(path, f"expected a map ({shape.name})")
        _check_size(len(value), meta, path, "entries")
        for k, v in value.items():
            validate(shape.key, k, f"{path}[{k!r}] (key)")
            validate(shape.value, v, f"{path}[{k!r}]")
        return
    if kind == "list":
        if not isinstance(value, list):
            raise _invalid(path, f"expected a list ({shape.name})")
        _check_size(len(value), meta, path, "items")
        for i, v in enumerate(value):
            validate(shape.member, v, f"{path}[{i}]")
        return
    if kind == "string":
        if not isinstance(value, str):
            raise _invalid(path, f"expected a string, got {type(value).__name__}")
        _check_size(len(value), meta, path, "characters")
        if "enum" in meta and value not in meta["enum"]:
            raise _invalid(path, f"{value!r} is not one of {meta['enum']}")
        if "pattern" in meta and not re.search(meta["pattern"], value):
            raise _invalid(path, f"{value!r} does not match the pattern {meta['pattern']}")
        return
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _invalid(path, f"expected an integer, got {value!r}")
        _check_size(value, meta, path, "")
        return
    if kind in ("double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _invalid(path, f"expected a number, got {value!r}")
        _check_size(value, meta, path, "")
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(path, f"expected a boolean, got {value!r}")
        return
    if kind == "timestamp":
        if not isinstance(value, int | float | str):
            raise _invalid(path, f"expected a timestamp, got {value!r}")
        return
    raise _invalid(path, f"the double does not support shapes of type {kind}")


def _check_size(n: float, meta: dict, path: str, unit: str) -> None:
    if "min" in meta and n < meta["min"]:
        raise _invalid(path, f"must be at least {meta['min']} {unit}".rstrip())
    if "max" in meta and n > meta["max"]:
        raise _invalid(path, f"must be at most {meta['max']} {unit}".rstrip())


def _from_text(shape: Any, text: str, path: str) -> Any:
    """A URI/query value converted to its shape's type (so the same checks apply)."""
    if shape.type_name in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise _invalid(path, f"expected an integer, got {text!r}") from None
    if shape.type_name == "boolean":
        return text == "true"
    return text


@dataclass
class Route:
    operation: Any
    method: str
    regex: re.Pattern[str]


@dataclass
class GreengrassDouble:
    """State and request handling of the double (see module doc)."""

    model: Any = field(
        default_factory=lambda: botocore.session.get_session().get_service_model("greengrassv2")
    )
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    executions: dict[str, dict[str, str]] = field(default_factory=dict)  # thing -> deployment -> status
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    operations: tuple[str, ...] = OPERATIONS
    signing_name: str = "greengrass"
    core_devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    installed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # thing -> component -> row
    throttled: int = 0  # the next this many requests are throttled
    outage: bool = False
    _tokens: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.routes = []
        for name in self.operations:
            op = self.model.operation_model(name)
            template = op.http["requestUri"].split("?")[0]
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self.routes.append(Route(op, op.http["method"], re.compile(f"^{regex}$")))

    def record_execution(self, thing_name: str, deployment_id: str, status: str) -> None:
        """Test hook: the core device ``thing_name`` reports ``status`` for the deployment."""
        with self._lock:
            self.executions.setdefault(thing_name, {})[deployment_id] = status

    def add_core_device(
        self, thing_name: str, *, status: str = "HEALTHY", installed: dict[str, str] | None = None
    ) -> None:
        """Register a Greengrass core device, with components it runs already (name -> version)."""
        with self._lock:
            self.core_devices[thing_name] = {
                "coreDeviceThingName": thing_name,
                "status": status,
                "lastStatusUpdateTimestamp": time.time(),
                "platform": "linux",
                "architecture": "aarch64",
                "runtime": "aws_nucleus_classic",
            }
            self.installed[thing_name] = {
                name: _component(name, version, "RUNNING") for name, version in (installed or {}).items()
            }

    def set_installed(self, thing_name: str, components: dict[str, tuple[str, str]]) -> None:
        """Test hook: what the core device runs now, name -> (version, lifecycle state)."""
        with self._lock:
            self.installed[thing_name] = {n: _component(n, v, st) for n, (v, st) in components.items()}
            self.core_devices[thing_name]["lastStatusUpdateTimestamp"] = time.time()
            broken = any(st in ("BROKEN", "ERRORED") for _, st in components.values())
            self.core_devices[thing_name]["status"] = "UNHEALTHY" if broken else "HEALTHY"

    def throttle(self, n: int) -> None:
        with self._lock:
            self.throttled = n

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [params for op, params in self.requests if op == operation]

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        if not re.match(
            _SIGV4.pattern.replace("greengrass", self.signing_name), headers.get("Authorization", "")
        ):
            raise ApiError(403, "AccessDeniedException", "missing or malformed SigV4 Authorization header")
        with self._lock:
            if self.outage:
                raise ApiError(503, "ServiceUnavailableException", "the service is unavailable")
            if self.throttled > 0:
                self.throttled -= 1
                raise ApiError(429, "ThrottlingException", "Rate exceeded")
        url = urlparse(raw_path)
        for route in self.routes:
            match = route.regex.match(url.path)
            if match and route.method == method:
                break
        else:
            raise ApiError(
                404, "UnknownOperationException", f"no greengrassv2 operation for {method} {url.path}"
            )
        op = route.operation
        params = self._params(op, match.groupdict(), parse_qs(url.query), body)
        validate(op.input_shape, params, "")
        with self._lock:
            self.requests.append((op.name, params))
            status = op.http.get("responseCode", 200)
            return status, getattr(self, "_" + re.sub(r"(?<!^)([A-Z])", r"_\1", op.name).lower())(params)

    def _params(
        self, op: Any, uri: dict[str, str], query: dict[str, list[str]], body: bytes
    ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        shape = op.input_shape
        body_members = {}
        if body:
            try:
                body_members = json.loads(body)
            except ValueError:
                raise _invalid("body", "is not JSON") from None
            if not isinstance(body_members, dict):
                raise _invalid("body", "must be a JSON object")
        for name, member in shape.members.items():
            loc, wire = member.serialization.get("location"), member.serialization.get("name", name)
            if loc == "uri" and wire in uri:
                params[name] = _from_text(member, unquote(uri[wire]), name)
            elif loc == "querystring" and wire in query:
                params[name] = _from_text(member, query[wire][0], name)
        for name, value in body_members.items():
            member = shape.members.get(name)
            if member is not None and member.serialization.get("location"):
                raise _invalid(name, "belongs in the URI or query string, not the body")
            params[name] = value
        return params

    # ------------------------------------------------------------------ operations

    def _create_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        token = p.get("clientToken")
        if token and token in self._tokens:
            d = self.deployments[self._tokens[token]]
            return {k: d[k] for k in ("deploymentId", "iotJobId", "iotJobArn")}
        target = p["targetArn"]
        revision = 1
        for d in self.deployments.values():
            if d["targetArn"] == target:
                revision = max(revision, int(d["revisionId"]) + 1)
                if d["isLatestForTarget"]:
                    d["isLatestForTarget"] = False
                    if d["deploymentStatus"] == "ACTIVE":
                        d["deploymentStatus"] = "INACTIVE"
        deployment_id = str(uuid.uuid4())
        job_id = str(uuid.uuid4())
        self.deployments[deployment_id] = {
            "targetArn": target,
            "revisionId": str(revision),
            "deploymentId": deployment_id,
            "deploymentName": p.get("deploymentName", deployment_id),
            "deploymentStatus": "ACTIVE",
            "iotJobId": job_id,
            "iotJobArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:job/{job_id}",
            "components": p.get("components", {}),
            "deploymentPolicies": p.get("deploymentPolicies", {}),
            "iotJobConfiguration": p.get("iotJobConfiguration", {}),
            "creationTimestamp": time.time(),
            "isLatestForTarget": True,
            "tags": p.get("tags", {}),
        }
        if token:
            self._tokens[token] = deployment_id
        d = self.deployments[deployment_id]
        return {k: d[k] for k in ("deploymentId", "iotJobId", "iotJobArn")}

    def _list_deployments(self, p: dict[str, Any]) -> dict[str, Any]:
        rows = [
            d
            for d in self.deployments.values()
            if ("targetArn" not in p or d["targetArn"] == p["targetArn"])
            and (p.get("historyFilter", "LATEST_ONLY") == "ALL" or d["isLatestForTarget"])
        ]
        start = int(p.get("nextToken", 0))
        size = p.get("maxResults", 50)
        page = rows[start : start + size]
        summary = (
            "targetArn",
            "revisionId",
            "deploymentId",
            "deploymentName",
            "creationTimestamp",
            "deploymentStatus",
            "isLatestForTarget",
        )
        out: dict[str, Any] = {"deployments": [{k: d[k] for k in summary} for d in page]}
        if start + size < len(rows):
            out["nextToken"] = str(start + size)
        return out

    def _get(self, deployment_id: str) -> dict[str, Any]:
        if deployment_id not in self.deployments:
            raise ApiError(
                404,
                "ResourceNotFoundException",
                f"deployment {deployment_id} not found",
                resourceId=deployment_id,
                resourceType="deployment",
            )
        return self.deployments[deployment_id]

    def _get_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        return dict(self._get(p["deploymentId"]))

    def _cancel_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        d = self._get(p["deploymentId"])
        if d["deploymentStatus"] != "ACTIVE":
            raise ApiError(
                409,
                "ConflictException",
                f"deployment {d['deploymentId']} is {d['deploymentStatus']}",
                resourceId=d["deploymentId"],
                resourceType="deployment",
            )
        d["deploymentStatus"] = "CANCELED"
        return {"message": "canceled"}

    def _list_effective_deployments(self, p: dict[str, Any]) -> dict[str, Any]:
        out = []
        for deployment_id, status in self.executions.get(p["coreDeviceThingName"], {}).items():
            d = self.deployments[deployment_id]
            out.append(
                {
                    "deploymentId": deployment_id,
                    "deploymentName": d["deploymentName"],
                    "iotJobId": d["iotJobId"],
                    "targetArn": d["targetArn"],
                    "coreDeviceExecutionStatus": status,
                    "creationTimestamp": d["creationTimestamp"],
                    "modifiedTimestamp": time.time(),
                }
            )
        return {"effectiveDeployments": out}

    def _list_installed_components(self, p: dict[str, Any]) -> dict[str, Any]:
        thing = p["coreDeviceThingName"]
        if thing not in self.core_devices:
            raise ApiError(
                404,
                "ResourceNotFoundException",
                f"core device {thing} not found",
                resourceId=thing,
                resourceType="coreDevice",
            )
        return _page(list(self.installed.get(thing, {}).values()), p, "installedComponents")

    def _list_core_devices(self, p: dict[str, Any]) -> dict[str, Any]:
        rows = [d for d in self.core_devices.values() if p.get("status") in (None, d["status"])]
        return _page(rows, p, "coreDevices")


def _component(name: str, version: str, state: str) -> dict[str, Any]:
    return {
        "componentName": name,
        "componentVersion": version,
        "lifecycleState": state,
        "isRoot": True,
        "lastStatusChangeTimestamp": time.time(),
        "lastReportedTimestamp": time.time(),
    }


def _page(rows: list[dict[str, Any]], p: dict[str, Any], key: str) -> dict[str, Any]:
    """One page of ``rows`` the API's way: ``maxResults`` (default 50) and an opaque ``nextToken``."""
    start = int(p.get("nextToken", 0))
    size = p.get("maxResults", 50)
    out: dict[str, Any] = {key: [dict(r) for r in rows[start : start + size]]}
    if start + size < len(rows):
        out["nextToken"] = str(start + size)
    return out


def _respond(double: GreengrassDouble) -> Respond:
    def respond(method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        extra = {"x-amzn-RequestId": str(uuid.uuid4())}
        try:
            status, out = double.handle(method, path, headers, body)
            return status, out, extra
        except ApiError as exc:
            return exc.status, exc.body, {**extra, "x-amzn-ErrorType": exc.code}
        except Exception as exc:  # a bug in the double: answer, do not hang the client
            return 500, {"message": repr(exc)}, {**extra, "x-amzn-ErrorType": "InternalServerException"}

    return respond


@contextmanager
def running_greengrass_double() -> Iterator[tuple[str, GreengrassDouble]]:
    """Yield (endpoint URL, double) for a greengrassv2 double on loopback; stop it on exit."""
    double = GreengrassDouble()
    with serving(_respond(double), name="greengrass-double") as url:
        yield url, double
