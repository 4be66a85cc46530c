"""The ``fleet/`` tree of the GitOps repository: desired device state in layers, parsed and checked.

Layout (beside the rollout specs; ``docs/gitops.md`` has an example)::

    fleet/schemas/<namespace>.json        JSON Schema of one namespace: {key: {field: value}}
    fleet/<tenant>/tenant.yaml            values for every device of the tenant
    fleet/<tenant>/tags/<name>.yaml       selector (tag -> value or list), priority, values
    fleet/<tenant>/devices/<device>.yaml  values for one device

Every layer file holds ``values: {namespace: {key: {field: value}}}``, the state model of
``device_state``. Parsing never stops at the first problem: every file's errors are collected
as :class:`FleetError` (the file, what is wrong, how to fix it), so one commit reports all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_sync.ids import validate_id

ROOT = "fleet"
SCHEMAS = f"{ROOT}/schemas"
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
YAML_SUFFIXES = (".yaml", ".yml")


class LayerKind(IntEnum):
    """Layer kinds from least to most specific: a more specific layer wins a field."""

    TENANT = 0
    TAG = 1
    DEVICE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class FleetError:
    """One problem of a commit's ``fleet/`` tree: the file, what is wrong and the fix."""

    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (fix: {self.fix})"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "fix": self.fix}


Values = dict[str, dict[str, dict[str, Any]]]


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    values: Values = Field(default_factory=dict, description="namespace -> key -> field -> value")

    @field_validator("values")
    @classmethod
    def _names_and_values(cls, values: Values) -> Values:
        for ns, keys in values.items():
            for key, fields in keys.items():
                for name in (ns, key, *fields):
                    if not NAME.fullmatch(name):
                        raise ValueError(
                            f"{name!r} is not a valid namespace, key or field name ({NAME.pattern})"
                        )
                for name, value in fields.items():
                    if value is None:
                        raise ValueError(
                            f"{ns}.{key}.{name} is null; to withdraw a value delete its line, "
                            "git removes it from the devices"
                        )
                    try:
                        json.dumps(value, allow_nan=False)
                    except (TypeError, ValueError):
                        raise ValueError(
                            f"{ns}.{key}.{name} = {value!r} is not a JSON value; quote dates and times"
                        ) from None
        return values


class TenantLayer(_Layer):
    """``fleet/<tenant>/tenant.yaml``: values for every device of the tenant."""


class DeviceLayer(_Layer):
    """``fleet/<tenant>/devices/<device>.yaml``: values for one device."""


class TagLayer(_Layer):
    """``fleet/<tenant>/tags/<name>.yaml``: values for the devices whose inventory tags match.

    ``selector`` (all must match, like a rollout target's tags): tag -> value or any of values.
    Of two tag layers setting one field the higher ``priority`` wins; on equal priority the
    layer whose name sorts last wins, so the outcome never depends on file listing order.
    """

    selector: dict[str, str | list[str]] = Field(min_length=1)
    priority: int = Field(default=0, ge=-1000, le=1000)

    @field_validator("selector")
    @classmethod
    def _selector(cls, selector: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for tag, want in selector.items():
            if isinstance(want, list) and not want:
                raise ValueError(f"selector tag {tag!r} lists no values; give a value or a non-empty list")
        return selector

    def matches(self, tags: Mapping[str, Any]) -> bool:
        for tag, want in self.selector.items():
            have = tags.get(tag)
            if have is None or str(have) not in (want if isinstance(want, list) else [want]):
                return False
        return True


LayerBody = TenantLayer | TagLayer | DeviceLayer
MODELS: dict[LayerKind, type[LayerBody]] = {
    LayerKind.TENANT: TenantLayer,
    LayerKind.TAG: TagLayer,
    LayerKind.DEVICE: DeviceLayer,
}


@dataclass(frozen=True)
class Layer:
    """One parsed layer file: where it is, its kind, its tenant and (tag or device) name."""

    path: str
    kind: LayerKind
    tenant_id: str
    name: str
    body: LayerBody

    @property
    def rank(self) -> tuple[int, int, str]:
        """Sort key, least specific first: kind, then tag priority, then name."""
        priority = self.body.priority if isinstance(self.body, TagLayer) else 0
        return (int(self.kind), priority, self.name)


@dataclass
class FleetTree:
    """A ``fleet/`` tree: layers by tenant, declared schemas by namespace, and the errors found."""

    layers: dict[str, list[Layer]]
    schemas: dict[str, dict[str, Any]]
    errors: list[FleetError]

    @property
    def tenants(self) -> list[str]:
        return sorted(self.layers)


_LAYOUT_FIX = (
    "use fleet/<tenant>/tenant.yaml, fleet/<tenant>/tags/<name>.yaml, "
    "fleet/<tenant>/devices/<device>.yaml or fleet/schemas/<namespace>.json"
)


def parse_tree(files: dict[str, str]) -> FleetTree:
    """Parse ``files`` (repository path -> text, only paths under ``fleet/``) into a tree."""
    tree = FleetTree({}, {}, [])
    for path in sorted(files):
        text = files[path]
        parts = path.split("/")
        if path.startswith(SCHEMAS + "/"):
            _schema(tree, path, parts, text)
            continue
        if parts[-1].startswith(".") or parts[-1].lower() in ("readme.md", "readme"):
            continue  # notes and dotfiles beside the layers are not layers
        placed = _place(parts)
        if placed is None:
            tree.errors.append(FleetError(path, "is not where a layer file can be", _LAYOUT_FIX))
            continue
        kind, tenant, name = placed
        try:
            validate_id("tenant", tenant)
            if kind is LayerKind.DEVICE:
                validate_id("device", name)
        except ValueError as exc:
            tree.errors.append(FleetError(path, str(exc), "rename the folder or file"))
            continue
        body = _load(tree, path, text, MODELS[kind])
        if body is not None:
            tree.layers.setdefault(tenant, []).append(Layer(path, kind, tenant, name, body))
    for layers in tree.layers.values():
        layers.sort(key=lambda layer: layer.rank)
    return tree


def _place(parts: list[str]) -> tuple[LayerKind, str, str] | None:
    if len(parts) == 3 and parts[2] in ("tenant.yaml", "tenant.yml"):
        return LayerKind.TENANT, parts[1], parts[1]
    if len(parts) == 4 and parts[2] in ("tags", "devices") and parts[3].endswith(YAML_SUFFIXES):
        kind = LayerKind.TAG if parts[2] == "tags" else LayerKind.DEVICE
        return kind, parts[1], parts[3].rsplit(".", 1)[0]
    return None


def _load(tree: FleetTree, path: str, text: str, model: type[LayerBody]) -> LayerBody | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        tree.errors.append(FleetError(path, f"is not valid YAML: {exc}", "fix the YAML syntax"))
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        tree.errors.append(
            FleetError(path, f"holds a {type(data).__name__}, not a mapping", "start with values:")
        )
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(file)"
            fix = "see docs/gitops.md for the layer fields"
            if err["type"] == "extra_forbidden":
                fix = f"remove {where}: a {model.__name__} has {', '.join(model.model_fields)}"
            tree.errors.append(FleetError(path, f"{where}: {err['msg']}", fix))
        return None


def _schema(tree: FleetTree, path: str, parts: list[str], text: str) -> None:
    if len(parts) != 3 or not parts[2].endswith(".json"):
        tree.errors.append(
            FleetError(path, "is not a namespace schema", "name it fleet/schemas/<namespace>.json")
        )
        return
    try:
        schema = json.loads(text)
    except ValueError as exc:
        tree.errors.append(FleetError(path, f"is not valid JSON: {exc}", "fix the JSON syntax"))
        return
    if not isinstance(schema, dict):
        tree.errors.append(
            FleetError(path, "is not a JSON Schema object", 'start with {"type": "object", ...}')
        )
        return
    tree.schemas[parts[2].removesuffix(".json")] = schema
