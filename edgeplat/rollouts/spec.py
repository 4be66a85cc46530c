"""The rollout spec: what to ship, to whom, in which phases, and which health gates guard it.

A spec is YAML (from the Dagster launchpad or a GitOps repo) validated by pydantic with
``extra="forbid"`` everywhere, so a typo is an error rather than a silently ignored field.
``load_spec`` turns pydantic's errors into a ``SpecError`` whose lines read
``strategy.phases[2].percent: phases must increase (50 after 50)``.

Regenerate the exported JSON schema with ``python -m edgeplat.rollouts.spec --schema``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from edge_sync.streams import STREAMS

SCHEMA_PATH = Path(__file__).with_name("schema.json")

# Health columns a gate may watch: the numeric payload of the device `health` stream.
# requests and errors are the counts behind error_rate, not metrics of their own
_NOT_METRICS = {"version", "slot", "desired_revision", "requests", "errors"}
_NOT_METRICS |= {"update_state", "update_version", "update_reason"}  # installer steps, not metrics
HEALTH_METRICS: tuple[str, ...] = tuple(n for n in STREAMS["health"].payload_names if n not in _NOT_METRICS)
# Metrics judged as rates of events over an exposure (count tests); the rest are continuous.
RATE_METRICS = frozenset({"error_rate", "crash_count", "heartbeat"})

SAFE_ID = r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class PathError(ValueError):
    """A validation error that points below the field its validator is attached to."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


class SpecError(ValueError):
    """A rollout spec that does not validate; ``errors`` are ``(path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "rollout spec") -> None:
        self.errors = errors
        lines = "\n".join(f"  {loc}: {msg}" for loc, msg in errors)
        super().__init__(f"{source} is invalid ({len(errors)} error{'s' * (len(errors) != 1)}):\n{lines}")


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"2d"`` (or a timedelta / seconds) to a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '10m' or '2h', got {value!r}")
    text = value.strip().replace(" ", "")
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(
            f"bad duration {value!r}: use a number and unit (ms, s, m, h, d, w), e.g. '10m', '1h30m'"
        )
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def format_duration(td: timedelta) -> str:
    """The inverse of ``parse_duration`` (largest whole units), for JSON round trips."""
    secs = td.total_seconds()
    if secs == 0:
        return "0s"
    out, rest = "", secs
    for unit in ("d", "h", "m", "s"):
        n = int(rest // _UNITS[unit])
        if n:
            out += f"{n}{unit}"
            rest -= n * _UNITS[unit]
    if rest > 1e-9:
        out += f"{round(rest * 1000)}ms"
    return out


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$", "examples": ["10m", "2h"]}
    ),
]
SafeId = Annotated[
    str, Field(pattern=SAFE_ID, description="lowercase letters, digits, '.', '_', '-'; 1-63 chars")
]
Platform = Literal["greengrass", "iot_edge"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GreengrassRelease(_Model):
    """The Greengrass v2 component version that carries the release."""

    component: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="e.g. com.acme.Inference")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$", description="semantic version")


class IotEdgeRelease(_Model):
    """The Azure IoT Edge module and container image that carry the release."""

    module: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    image: str = Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", description="e.g. acr.io/acme/inference:2.1.0")


class Release(_Model):
    """What is shipped: one artifact per platform (at least one)."""

    name: SafeId
    version: str = Field(min_length=1)
    greengrass: GreengrassRelease | None = None
    iot_edge: IotEdgeRelease | None = None

    @model_validator(mode="after")
    def _one_platform(self) -> Release:
        if self.greengrass is None and self.iot_edge is None:
            raise ValueError(
                "give at least one platform artifact: greengrass {component, version} or iot_edge {module, image}"
            )
        return self

    @property
    def platforms(self) -> list[str]:
        return [p for p in ("greengrass", "iot_edge") if getattr(self, p) is not None]


class Target(_Model):
    """Which devices the rollout may touch: tenants, platforms and device tags (all must match)."""

    tenants: list[SafeId] = Field(min_length=1)
    platforms: list[Platform] | None = Field(
        default=None, description="default: every platform the release ships"
    )
    tags: dict[str, str | list[str]] = Field(
        default_factory=dict, description="tag -> value or any of values"
    )

    @field_validator("tenants", "platforms")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            dupes = sorted({x for x in v if v.count(x) > 1})
            raise ValueError(f"duplicate entries {dupes}")
        return v


class Gate(_Model):
    """A health gate on one metric: canary cohort vs absolute limit and/or vs the baseline cohort.

    ``heartbeat`` gates bound the *missed* heartbeat fraction, so every gate is higher-is-worse.
    """

    metric: Annotated[str, WithJsonSchema({"type": "string", "enum": list(HEALTH_METRICS)})]
    max: float | None = Field(default=None, ge=0, description="absolute limit on the canary value")
    max_ratio: float | None = Field(default=None, gt=0, description="limit on canary / baseline")
    max_increase: float | None = Field(default=None, ge=0, description="limit on canary - baseline")
    min_devices: int = Field(default=10, ge=1, description="per cohort, before any verdict")
    min_samples: int = Field(default=300, ge=1, description="health samples per cohort, before any verdict")
    alpha: float = Field(default=0.01, gt=0, lt=0.5, description="significance level of the one-sided tests")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in HEALTH_METRICS:
            raise ValueError(
                f"unknown metric {v!r}; gates can watch the health columns: {', '.join(HEALTH_METRICS)}"
            )
        return v

    @model_validator(mode="after")
    def _has_limit(self) -> Gate:
        if self.max is None and self.max_ratio is None and self.max_increase is None:
            raise ValueError("give at least one limit: max, max_ratio or max_increase")
        return self


class Phase(_Model):
    """One step: the cumulative share of the target that runs the release, how long it bakes, who approves.

    ``approval: manual`` means an operator must approve before this phase is deployed
    (after the previous phase has baked and passed its gates).
    """

    percent: float = Field(gt=0, le=100, description="cumulative share of target devices, 0 < p <= 100")
    min_devices: int | None = Field(
        default=None,
        ge=1,
        description="cumulative device floor: the phase holds max(percent of the target, min_devices) "
        "devices, in the same hash order (stratified: split over strata by their size)",
    )
    bake: Duration = Field(default=timedelta(minutes=10), description="watch time before promotion")
    approval: Literal["auto", "manual"] = "auto"
    gates: list[Gate] | None = Field(
        default=None, description="override the rollout-level gates for this phase"
    )


def _check_phases(phases: list[Phase]) -> list[Phase]:
    for i in range(1, len(phases)):
        prev, cur = phases[i - 1].percent, phases[i].percent
        if cur <= prev:
            raise PathError((i, "percent"), f"phases must increase ({cur:g} after {prev:g})")
    if phases and phases[-1].percent != 100:
        raise PathError(
            (len(phases) - 1, "percent"), f"the last phase must be 100, got {phases[-1].percent:g}"
        )
    return phases


class CanaryStrategy(_Model):
    """Deploy to growing cumulative shares of the target, baking and gating each phase."""

    type: Literal["canary"]
    phases: list[Phase] = Field(min_length=1)

    @field_validator("phases")
    @classmethod
    def _phases(cls, v: list[Phase]) -> list[Phase]:
        return _check_phases(v)


class BlueGreenStrategy(_Model):
    """Stage on the inactive slot for the whole target, then switch slots in phases; the old slot
    stays installed so rollback is an instant switch back."""

    type: Literal["blueGreen"]
    phases: list[Phase] = Field(default_factory=lambda: [Phase(percent=100)], min_length=1)

    @field_validator("phases")
    @classmethod
    def _phases(cls, v: list[Phase]) -> list[Phase]:
        return _check_phases(v)


Strategy = Annotated[CanaryStrategy | BlueGreenStrategy, Field(discriminator="type")]


class MaintenanceWindow(_Model):
    """When new deploys may start: each cron fire opens a window of ``duration`` in ``timezone``.

    Rollbacks ignore the window.
    """

    cron: str = Field(description="5-field cron, e.g. '0 22 * * 1-5'")
    duration: Duration
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not croniter.is_valid(v) or len(v.split()) != 5:
            raise ValueError(
                f"bad cron expression {v!r}: use 5 fields 'minute hour day month weekday', e.g. '0 22 * * 1-5'"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {v!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
            ) from None
        return v

    @field_validator("duration")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("duration must be positive")
        return v

    def contains(self, now: datetime) -> bool:
        """Whether ``now`` (timezone-aware) falls inside a window."""
        local = now.astimezone(ZoneInfo(self.timezone))
        # The latest fire at or before now: croniter's get_prev is strict, so nudge past now.
        start = croniter(self.cron, local + timedelta(seconds=1)).get_prev(datetime)
        return start <= local < start + self.duration


class Selection(_Model):
    """How devices are hashed into phases: salt scope and optional stratification."""

    salt: Literal["per_rollout", "fleet"] = Field(
        default="per_rollout",
        description="per_rollout: a new device order per rollout; fleet: the same canaries every time",
    )
    stratify_by: str | None = Field(default=None, description="null, 'tenant' or 'tag:<name>'")

    @field_validator("stratify_by")
    @classmethod
    def _stratum(cls, v: str | None) -> str | None:
        if v is None or v == "tenant" or (v.startswith("tag:") and len(v) > 4):
            return v
        raise ValueError(f"bad stratify_by {v!r}: use null, 'tenant' or 'tag:<name>'")


class RolloutSpec(_Model):
    """A progressive rollout of one release to a target set of devices."""

    name: SafeId
    release: Release
    target: Target
    strategy: Strategy
    gates: list[Gate] = Field(default_factory=list, description="default gates for every phase")
    max_inconclusive: int = Field(
        default=6, ge=0, description="consecutive inconclusive evaluations before the policy applies"
    )
    gate_interval: Duration = Field(
        default=timedelta(minutes=5), description="spacing of recorded gate evaluations"
    )
    progress_deadline: Duration = Field(
        default=timedelta(hours=2), description="longest a step may go without progress"
    )
    device_timeout: Duration = Field(
        default=timedelta(minutes=30),
        description="after this a device that has not acknowledged is unreachable",
    )
    maintenance_window: MaintenanceWindow | None = None
    rollback: Literal["automatic", "pause"] = "automatic"
    on_inconclusive: Literal["pause", "extend", "rollback"] = Field(
        default="pause",
        description="after max_inconclusive inconclusive evaluations: pause (an operator decides; the "
        "progress deadline ends it if nobody does), extend (keep evaluating until the progress "
        "deadline), rollback (apply the rollback policy)",
    )
    selection: Selection = Field(default_factory=Selection)

    @model_validator(mode="after")
    def _platforms_shipped(self) -> RolloutSpec:
        for i, p in enumerate(self.target.platforms or []):
            if getattr(self.release, p) is None:
                raise PathError(
                    ("target", "platforms", i),
                    f"release has no {p} artifact; add release.{p} or drop the platform",
                )
        return self

    @property
    def platforms(self) -> list[str]:
        return list(self.target.platforms or self.release.platforms)

    @property
    def phases(self) -> list[Phase]:
        return list(self.strategy.phases)

    def gates_for(self, phase: int) -> list[Gate]:
        override = self.strategy.phases[phase].gates
        return list(self.gates if override is None else override)


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(spec)"


def _spec_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors():
        # Drop the discriminator tag pydantic puts into union paths (strategy.canary.phases -> strategy.phases).
        loc = tuple(
            p
            for i, p in enumerate(err["loc"])
            if not (i > 0 and err["loc"][i - 1] == "strategy" and p in ("canary", "blueGreen"))
        )
        msg = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, PathError):
            loc, msg = loc + cause.loc, cause.msg
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r} (check spelling; extra fields are not allowed)"
        errors.append((_format_loc(loc), msg))
    return errors


def load_spec(source: str | Path | dict) -> RolloutSpec:
    """A validated spec from a YAML/JSON file path, YAML text or a dict; raises ``SpecError``."""
    label = "rollout spec"
    if isinstance(source, dict):
        data: Any = source
    else:
        text = str(source)
        if isinstance(source, Path) or ("\n" not in text and text.endswith((".yaml", ".yml", ".json"))):
            path = Path(source)
            if not path.exists():
                raise SpecError([("(file)", f"no such file {str(path)!r}")], label)
            label, text = f"rollout spec {str(path)!r}", path.read_text()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError([("(yaml)", str(exc).replace("\n", " "))], label) from None
    if not isinstance(data, dict):
        raise SpecError(
            [("(spec)", f"expected a mapping at the top level, got {type(data).__name__}")], label
        )
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_spec_errors(exc), label) from None


def json_schema() -> dict:
    return RolloutSpec.model_json_schema()


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeplat.rollouts.spec", description="Rollout spec tools"
    )
    parser.add_argument("--schema", action="store_true", help=f"write the JSON schema to {SCHEMA_PATH}")
    parser.add_argument("--check", nargs="*", default=[], metavar="SPEC", help="validate spec files")
    args = parser.parse_args(argv)
    if args.schema:
        print(f"wrote {write_schema()}")
    status = 0
    for f in args.check:
        try:
            spec = load_spec(Path(f))
            print(f"{f}: ok ({spec.strategy.type}, phases {[p.percent for p in spec.phases]})")
        except SpecError as exc:
            print(exc, file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
