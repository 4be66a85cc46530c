"""A loopback test double of the Azure IoT Hub service REST API (not an emulator).

``running_iothub_double()`` serves on 127.0.0.1 (free port) the routes the
``azure-iot-hub`` SDK's generated protocol client calls for twins and configurations
(paths from ``azure/iot/hub/protocol/operations/*.py``, ``api-version`` as the installed
SDK sends it):

- ``GET|PATCH|PUT /twins/{id}``, ``GET /twins/{id}/modules/{mid}``
- ``PUT|GET|DELETE /configurations/{id}``, ``GET /configurations``
- ``POST /devices/query``: ``SELECT * FROM devices [WHERE IS_DEFINED(<path>)]``,
  ``SELECT * FROM devices WHERE capabilities.iotEdge = true`` and
  ``SELECT * FROM devices.modules WHERE moduleId = '<id>'``, paged as the hub pages
  (``x-ms-max-item-count``, ``x-ms-continuation``)

It checks what the service checks and the backend could get wrong: the SAS token in
``Authorization`` (format, hub, key name, HMAC signature and expiry), ``api-version``,
twin tag names (no ``.``, ``$``, space), JSON-merge-patch semantics (``null`` removes a
tag), ``If-Match`` etags, configuration ids, required fields, a single content kind,
layered ``$edgeAgent`` paths (``properties.desired...``) and that a deployment's content
is immutable once created. Errors use the hub's shape
(``{"Message": "ErrorCode:<code>;...", "ExceptionMessage": ...}``).

Devices must be registered first with ``add_device`` (the hub has no twin for an unknown
device); ``set_module_reported`` plays the edge agent reporting what it runs.
``throttle(n)`` answers the next ``n`` requests with the hub's 429 ``ThrottlingException``;
``outage`` answers every request with 503.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote, urlparse

from azure.iot.hub.protocol.operations.configuration_operations import ConfigurationOperations

from tests.support.http_double import Respond, serving

API_VERSION = ConfigurationOperations(None, None, None, None).api_version
HUB = "edgeplat-test.azure-devices.net"
KEY_NAME = "iothubowner"
KEY = base64.b64encode(b"edgeplat-iothub-double-key-32byt").decode()
CONNECTION_STRING = f"HostName={HUB};SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
CONFIG_ID = re.compile(r"^[a-z0-9\-:+%_#*?!(),=@;']{1,128}$")
_BAD_KEY = re.compile(r"[.$ \x00-\x1f\x7f-\x9f]")
_QUERY = re.compile(r"^\s*select\s+\*\s+from\s+devices(?:\s+where\s+is_defined\(\s*([\w.]+)\s*\))?\s*$", re.I)
_EDGE_QUERY = re.compile(
    r"^\s*select\s+\*\s+from\s+devices\s+where\s+capabilities\.iotEdge\s*=\s*true\s*$", re.I
)
_MODULES_QUERY = re.compile(
    r"^\s*select\s+\*\s+from\s+devices\.modules\s+where\s+moduleId\s*=\s*'([$\w-]+)'\s*$", re.I
)


class HubError(Exception):
    """An error response in the hub's shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "Message": f"ErrorCode:{code};{message}",
            "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}",
        }


def _etag() -> str:
    return base64.b64encode(uuid.uuid4().bytes[:8]).decode()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict):
            sub = target.get(k)
            if not isinstance(sub, dict):
                sub = target[k] = {}
            _merge_patch(sub, v)
        else:
            target[k] = v


def _check_tags(tags: Any, path: str = "tags", depth: int = 1) -> None:
    if not isinstance(tags, dict):
        raise HubError(400, "ArgumentInvalid", f"{path} must be a JSON object")
    if depth > 10:
        raise HubError(400, "ArgumentInvalid", f"{path} nests deeper than the 10 levels twins allow")
    for k, v in tags.items():
        if not k or len(k.encode()) > 128 or _BAD_KEY.search(k):
            raise HubError(
                400, "ArgumentInvalid", f"twin property name {path}.{k!r} is invalid: no '.', '$', space"
            )
        if isinstance(v, dict):
            _check_tags(v, f"{path}.{k}", depth + 1)


@dataclass
class IotHubDouble:
    """State and request handling of the double (see module doc)."""

    hub: str = HUB
    key_name: str = KEY_NAME
    key: str = KEY
    twins: dict[str, dict[str, Any]] = field(default_factory=dict)
    module_twins: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    configurations: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    throttled: int = 0
    outage: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_device(
        self,
        device_id: str,
        *,
        tags: dict[str, Any] | None = None,
        connected: bool = True,
        edge: bool = True,
    ) -> None:
        """Register a device (an IoT Edge device unless ``edge=False``) so it has a twin."""
        with self._lock:
            self.twins.setdefault(
                device_id,
                {
                    "deviceId": device_id,
                    "etag": _etag(),
                    "version": 1,
                    "status": "enabled",
                    "connectionState": "Connected" if connected else "Disconnected",
                    "lastActivityTime": _now(),
                    "tags": copy.deepcopy(tags or {}),
                    "properties": {"desired": {}, "reported": {}},
                    "capabilities": {"iotEdge": edge},
                },
            )

    def throttle(self, n: int) -> None:
        with self._lock:
            self.throttled = n

    def set_module_reported(self, device_id: str, module_id: str, reported: dict[str, Any]) -> None:
        """Test hook: the device's module (e.g. ``$edgeAgent``) reports these properties."""
        with self._lock:
            self.module_twins[(device_id, module_id)] = {
                "deviceId": device_id,
                "moduleId": module_id,
                "etag": _etag(),
                "version": 1,
                "properties": {"desired": {}, "reported": reported},
            }

    def calls(self, method: str, prefix: str = "") -> list[str]:
        return [p for m, p in self.requests if m == method and p.startswith(prefix)]

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, raw: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        self._check_auth(headers.get("Authorization", ""))
        with self._lock:
            if self.outage:
                raise HubError(503, "ServiceUnavailable", "the hub is unavailable")
            if self.throttled > 0:
                self.throttled -= 1
                raise HubError(429, "ThrottlingException", "IoT Hub throttling: retry later")
        url = urlparse(raw)
        query = parse_qs(url.query)
        if query.get("api-version") != [API_VERSION]:
            raise HubError(
                400,
                "InvalidProtocolVersion",
                f"api-version must be {API_VERSION}, got {query.get('api-version')}",
            )
        data = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                raise HubError(400, "ArgumentInvalid", "request body is not JSON") from None
        path = [unquote(p) for p in url.path.strip("/").split("/")]
        if_match = headers.get("If-Match")
        with self._lock:
            self.requests.append((method, url.path))
            match (method, path):
                case ("GET", ["twins", device]):
                    return 200, self._twin(device), {}
                case ("PATCH" | "PUT", ["twins", device]):
                    return 200, self._update_twin(device, data, if_match, replace=method == "PUT"), {}
                case ("GET", ["twins", device, "modules", module]):
                    self._twin(device)
                    twin = self.module_twins.get((device, module))
                    if twin is None:
                        raise HubError(404, "ModuleNotFound", f"module {module} on device {device} not found")
                    return 200, twin, {}
                case ("PUT", ["configurations", cid]):
                    return self._put_configuration(cid, data, if_match)
                case ("GET", ["configurations", cid]):
                    return 200, self._configuration(cid), {}
                case ("DELETE", ["configurations", cid]):
                    config = self._configuration(cid)
                    if if_match not in (None, "*") and if_match.strip('"') != config["etag"]:
                        raise HubError(
                            412, "PreconditionFailed", f"etag {if_match} does not match configuration {cid}"
                        )
                    del self.configurations[cid]
                    return 204, None, {}
                case ("GET", ["configurations"]):
                    top = int(query.get("top", ["20"])[0])
                    return 200, list(self.configurations.values())[:top], {}
                case ("POST", ["devices", "query"]):
                    return self._query(data, headers)
        raise HubError(404, "NotFound", f"the double serves no {method} {url.path}")

    def _check_auth(self, header: str) -> None:
        m = re.fullmatch(r"SharedAccessSignature sr=([^&]+)&sig=([^&]+)&se=(\d+)&skn=([^&]+)", header)
        if not m:
            raise HubError(
                401, "IotHubUnauthorizedAccess", "Authorization is not a SharedAccessSignature token"
            )
        sr, sig, se, skn = m.groups()
        if sr != quote_plus(self.hub) or skn != self.key_name:
            raise HubError(
                401,
                "IotHubUnauthorizedAccess",
                f"token is for {unquote(sr)}/{skn}, not {self.hub}/{self.key_name}",
            )
        if int(se) < time.time():
            raise HubError(401, "IotHubUnauthorizedAccess", "SAS token expired")
        expected = hmac.new(base64.b64decode(self.key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(unquote(sig), base64.b64encode(expected).decode()):
            raise HubError(401, "IotHubUnauthorizedAccess", "SAS signature does not verify")

    def _twin(self, device: str) -> dict[str, Any]:
        if device not in self.twins:
            raise HubError(404, "DeviceNotFound", f"device {device} is not registered in {self.hub}")
        return self.twins[device]

    def _update_twin(self, device: str, patch: Any, if_match: str | None, *, replace: bool) -> dict[str, Any]:
        twin = self._twin(device)
        if not isinstance(patch, dict):
            raise HubError(400, "ArgumentInvalid", "twin patch must be a JSON object")
        if if_match not in (None, "*") and if_match.strip('"') != twin["etag"]:
            raise HubError(412, "PreconditionFailed", f"etag {if_match} does not match the twin of {device}")
        unknown = set(patch) - {"deviceId", "etag", "tags", "properties", "version"}
        if unknown:
            raise HubError(400, "ArgumentInvalid", f"twin patch may not set {sorted(unknown)}")
        if "tags" in patch and patch["tags"] is not None:
            _check_tags(patch["tags"])
            if replace:
                twin["tags"] = {}
            _merge_patch(twin["tags"], patch["tags"])
        desired = (patch.get("properties") or {}).get("desired")
        if desired:
            _merge_patch(twin["properties"]["desired"], desired)
        twin["etag"] = _etag()
        twin["version"] += 1
        return twin

    def _configuration(self, cid: str) -> dict[str, Any]:
        if cid not in self.configurations:
            raise HubError(404, "ConfigurationNotFound", f"configuration {cid} not found")
        return self.configurations[cid]

    def _put_configuration(
        self, cid: str, config: Any, if_match: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        if not CONFIG_ID.match(cid):
            raise HubError(
                400,
                "ArgumentInvalid",
                f"configuration id {cid!r} must be 1-128 lowercase letters, digits and -:+%_#*?!(),=@;'",
            )
        if not isinstance(config, dict) or config.get("id") != cid:
            raise HubError(400, "ArgumentInvalid", f"body must be a configuration whose id is {cid!r}")
        allowed = {
            "id",
            "schemaVersion",
            "labels",
            "content",
            "targetCondition",
            "priority",
            "etag",
            "metrics",
            "systemMetrics",
            "createdTimeUtc",
            "lastUpdatedTimeUtc",
        }
        if set(config) - allowed:
            raise HubError(
                400, "ArgumentInvalid", f"unknown configuration fields {sorted(set(config) - allowed)}"
            )
        if not isinstance(config.get("priority"), int) or config["priority"] < 0:
            raise HubError(400, "ArgumentInvalid", "priority must be a non-negative integer")
        if not isinstance(config.get("targetCondition"), str):
            raise HubError(400, "ArgumentInvalid", "targetCondition is required")
        labels = config.get("labels") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise HubError(400, "ArgumentInvalid", "labels must map strings to strings")
        content = config.get("content")
        kinds = [k for k in ("deviceContent", "modulesContent", "moduleContent") if (content or {}).get(k)]
        if len(kinds) != 1:
            raise HubError(
                400,
                "ArgumentInvalid",
                f"content must hold exactly one of deviceContent, modulesContent, moduleContent (got {kinds})",
            )
        if kinds == ["modulesContent"]:
            for module, props in content["modulesContent"].items():
                if not isinstance(props, dict) or not all(p.startswith("properties.desired") for p in props):
                    raise HubError(
                        400,
                        "ArgumentInvalid",
                        f"modulesContent.{module} keys must be properties.desired paths",
                    )
        existing = self.configurations.get(cid)
        if existing is None and if_match not in (None, "*"):
            raise HubError(404, "ConfigurationNotFound", f"configuration {cid} not found (If-Match given)")
        if existing is not None:
            if if_match is None:
                raise HubError(
                    409, "ConfigurationAlreadyExists", f"configuration {cid} exists; update with its etag"
                )
            if if_match != "*" and if_match.strip('"') != existing["etag"]:
                raise HubError(
                    412, "PreconditionFailed", f"etag {if_match} does not match configuration {cid}"
                )
            if existing["content"] != content:
                raise HubError(
                    400,
                    "ArgumentInvalid",
                    f"the content of deployment {cid} cannot be changed after creation",
                )
        stored = copy.deepcopy(
            {k: config[k] for k in ("id", "labels", "content", "targetCondition", "priority") if k in config}
        )
        stored.update(
            schemaVersion=config.get("schemaVersion") or "1.0",
            etag=_etag(),
            lastUpdatedTimeUtc=_now(),
            createdTimeUtc=existing["createdTimeUtc"] if existing else _now(),
            systemMetrics={"results": {}, "queries": {}},
            metrics={"results": {}, "queries": {}},
        )
        self.configurations[cid] = stored
        return (200 if existing else 201), stored, {}

    def _query(self, spec: Any, headers: Any) -> tuple[int, Any, dict[str, str]]:
        text = (spec or {}).get("query", "")
        m, edge, modules = _QUERY.match(text), _EDGE_QUERY.match(text), _MODULES_QUERY.match(text)
        if modules:
            out = [t for (_, mid), t in self.module_twins.items() if mid == modules.group(1)]
        elif edge:
            out = [t for t in self.twins.values() if t["capabilities"].get("iotEdge")]
        elif m:
            path = m.group(1)
            out = []
            for twin in self.twins.values():
                node: Any = twin
                for part in path.split(".") if path else []:
                    node = node.get(part) if isinstance(node, dict) else None
                if node is not None:
                    out.append(twin)
        else:
            raise HubError(400, "BadRequest", f"the double does not run the query {text!r}")
        start = int(headers.get("x-ms-continuation") or 0)
        size = int(headers.get("x-ms-max-item-count") or 100)
        if not 1 <= size <= 1000:
            raise HubError(400, "ArgumentInvalid", f"x-ms-max-item-count {size} is not in 1..1000")
        token = str(start + size) if start + size < len(out) else ""
        return 200, out[start : start + size], {"x-ms-item-type": "twin", "x-ms-continuation": token}


def _respond(double: IotHubDouble) -> Respond:
    def respond(method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            return double.handle(method, path, headers, body)
        except HubError as exc:
            return exc.status, exc.body, {}
        except Exception as exc:  # a bug in the double: answer, do not hang the client
            return 500, {"Message": f"ErrorCode:ServerError;{exc!r}"}, {}

    return respond


@contextmanager
def running_iothub_double() -> Iterator[tuple[str, IotHubDouble]]:
    """Yield (base URL, double) for an IoT Hub double on loopback; stop it on exit.

    Use ``CONNECTION_STRING`` with the SDK and point its protocol client at the base URL
    (``AzureIotEdgeBackend.from_connection_string(..., base_url=url)``).
    """
    double = IotHubDouble()
    with serving(
        _respond(double),
        name="iothub-double",
        content_type="application/json; charset=utf-8",
        protocol="HTTP/1.1",
    ) as url:
        yield url, double
