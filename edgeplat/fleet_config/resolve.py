"""Resolve a ``fleet/`` tree into each device's desired values, and check it before anything applies.

Most specific wins, field by field: the tenant layer, then the tag layers whose selector
matches the device's inventory tags (by priority, then name), then the device's own layer.
``check`` refuses a tree the platform cannot apply faithfully, naming file and fix:

* an unknown tenant (no device in the inventory) or device (a device file for no device);
* a namespace without a declared schema, or a value the schema rejects (each layer alone,
  ignoring ``required``, then each device's resolved values against the whole schema);
* a field whose conflict rule cannot take a withdrawal: git must be able to remove what it
  set, so only overwriting rules (``lww``, ``prefer_central``, ``prefer_device``) are
  allowed; ``max``/``min``/``counter``/``set_union``/``custom`` never forget a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator, extend

from edge_sync.resolvers import canonical_json
from edge_sync.rules import RuleSet, rule_kind
from edgeplat.fleet_config.layers import FleetError, FleetTree, Layer, LayerKind, TagLayer

FieldKey = tuple[str, str, str]  # namespace, key, field
Inventory = Mapping[str, Mapping[str, Mapping[str, Any]]]  # tenant -> device -> tags


@dataclass(frozen=True)
class Source:
    """A resolved value (canonical JSON text) and the layer file it comes from."""

    value: str
    path: str
    kind: LayerKind


Resolution = dict[FieldKey, Source]
# Validation of one layer alone: a field another layer supplies must not count as missing.
_PartialValidator = extend(Draft202012Validator, {"required": lambda *_: iter(())})


def resolve_device(layers: list[Layer], device_id: str, tags: Mapping[str, Any]) -> Resolution:
    """The desired values of one device from its tenant's ``layers`` (sorted least specific first)."""
    out: Resolution = {}
    for layer in layers:
        if layer.kind is LayerKind.TAG and not (
            isinstance(layer.body, TagLayer) and layer.body.matches(tags)
        ):
            continue
        if layer.kind is LayerKind.DEVICE and layer.name != device_id:
            continue
        for ns, keys in layer.body.values.items():
            for key, fields in keys.items():
                for name, value in fields.items():
                    out[(ns, key, name)] = Source(canonical_json(value), layer.path, layer.kind)
    return out


def resolve_tenant(
    tree: FleetTree, tenant_id: str, devices: Mapping[str, Mapping[str, Any]]
) -> dict[str, Resolution]:
    """Every device of the tenant that some layer gives a value: device -> resolution."""
    layers = tree.layers.get(tenant_id, [])
    out = {d: resolve_device(layers, d, tags) for d, tags in sorted(devices.items())}
    return {d: r for d, r in out.items() if r}


def check(tree: FleetTree, inventory: Inventory, rules: RuleSet) -> dict[str, dict[str, Resolution]]:
    """Resolve every tenant of the tree, appending every problem to ``tree.errors`` (see module doc)."""
    validators = _validators(tree)
    resolved: dict[str, dict[str, Resolution]] = {}
    for tenant in tree.tenants:
        devices = inventory.get(tenant)
        if not devices:
            tree.errors.append(
                FleetError(
                    f"fleet/{tenant}/",
                    f"tenant {tenant!r} has no device in the inventory",
                    "check the folder name against `edgeplat device list`, or register the tenant's devices first",
                )
            )
            continue
        for layer in tree.layers[tenant]:
            if layer.kind is LayerKind.DEVICE and layer.name not in devices:
                tree.errors.append(
                    FleetError(
                        layer.path,
                        f"device {layer.name!r} of tenant {tenant!r} is not in the inventory",
                        "check the file name against `edgeplat device list`, or register the device first",
                    )
                )
            _check_layer(tree, layer, validators, rules)
        resolved[tenant] = resolve_tenant(tree, tenant, devices)
        # Devices resolving to the same values from the same files are validated (and reported) once.
        alike: dict[tuple[tuple[FieldKey, str, str], ...], list[str]] = {}
        for device, resolution in resolved[tenant].items():
            signature = tuple(sorted((k, s.value, s.path) for k, s in resolution.items()))
            alike.setdefault(signature, []).append(device)
        for group in alike.values():
            _check_resolved(tree, tenant, group, resolved[tenant][group[0]], validators)
    return resolved


def _validators(tree: FleetTree) -> dict[str, tuple[Any, Any]]:
    out = {}
    for ns, schema in sorted(tree.schemas.items()):
        try:
            Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            tree.errors.append(
                FleetError(
                    f"fleet/schemas/{ns}.json", f"is not a valid JSON Schema: {exc.message}", "fix the schema"
                )
            )
            continue
        out[ns] = (_PartialValidator(schema), Draft202012Validator(schema))
    return out


def _check_layer(
    tree: FleetTree, layer: Layer, validators: dict[str, tuple[Any, Any]], rules: RuleSet
) -> None:
    for ns, keys in layer.body.values.items():
        if ns not in validators:
            if ns not in tree.schemas:  # a broken schema is reported once, at the schema
                tree.errors.append(
                    FleetError(
                        layer.path,
                        f"namespace {ns!r} has no schema",
                        f"declare it in fleet/schemas/{ns}.json (a JSON Schema of {{key: {{field: value}}}})",
                    )
                )
            continue
        for err in sorted(validators[ns][0].iter_errors(keys), key=lambda e: list(e.absolute_path)):
            where = ".".join([ns, *(str(p) for p in err.absolute_path)])
            tree.errors.append(
                FleetError(
                    layer.path,
                    f"{where}: {err.message}",
                    f"change the value to match fleet/schemas/{ns}.json",
                )
            )
        for key, fields in keys.items():
            for name in fields:
                rule = rules.rule_for(ns, name)
                kind = rule_kind(rule)
                if not kind.picks or kind.sign:
                    tree.errors.append(
                        FleetError(
                            layer.path,
                            f"{ns}.{key}.{name} merges by rule {rule!r}, which never forgets a value, so a "
                            "value git sets could not be withdrawn",
                            "set it with the edit_device_state job, or give the field an overwriting rule "
                            "(lww, prefer_central, prefer_device) in the rules file",
                        )
                    )


def _check_resolved(
    tree: FleetTree,
    tenant: str,
    devices: list[str],
    resolution: Resolution,
    validators: dict[str, tuple[Any, Any]],
) -> None:
    named = ", ".join(f"{tenant}/{d}" for d in devices[:5])
    named = f"device {named}" if len(devices) == 1 else f"devices {named}"
    if len(devices) > 5:
        named += f" and {len(devices) - 5} more"
    by_ns: dict[str, dict[str, dict[str, Any]]] = {}
    for (ns, key, name), src in resolution.items():
        by_ns.setdefault(ns, {}).setdefault(key, {})[name] = json.loads(src.value)
    for ns, keys in sorted(by_ns.items()):
        if ns not in validators:
            continue  # already reported per layer
        for err in validators[ns][1].iter_errors(keys):
            path = [str(p) for p in err.absolute_path]
            if err.validator == "required" or len(path) < 2:
                files = sorted({s.path for (n, *_), s in resolution.items() if n == ns})
                where, fix = (
                    ", ".join(files),
                    "add the missing value to one of those layers (or the tenant layer)",
                )
            else:
                where = resolution[(ns, path[0], path[1])].path
                fix = f"change the value to match fleet/schemas/{ns}.json"
                if any(
                    e.path == where and e.message.startswith(f"{'.'.join([ns, *path])}:") for e in tree.errors
                ):
                    continue  # the layer alone already fails there: reported once, at the layer
            tree.errors.append(
                FleetError(
                    where,
                    f"resolved for {named}: {'.'.join([ns, *path])}: {err.message}",
                    fix,
                )
            )
