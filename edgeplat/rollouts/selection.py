"""Which devices are in which rollout phase: stable hash buckets, optionally stratified.

Every device gets a bucket in [0, 10000) from a keyed BLAKE2b hash of its id under the
rollout's salt (never Python's per-process ``hash``), so every process, machine and restart
computes the same bucket. Phase ``k`` with cumulative percent ``p_k`` holds the devices with
``bucket < p_k * 100``; the thresholds increase with ``k``, so a device never leaves an
earlier phase, and a device that registers after launch is placed by the same rule.

Stratified placement (``stratify_by="tenant"`` or ``"tag:<name>"``) gives every stratum
its exact share of every phase: within a stratum of ``n`` devices the threshold of phase
``k`` is the bucket just above the ``ceil(p_k * n)``-th smallest bucket. Pure rank rules
are not stable when devices register (a newcomer with a low bucket pushes the boundary
device out), so thresholds are *sticky*: ``assign_phases`` takes the thresholds recorded at
the previous deploy as ``floor`` and never lowers them. With the floor passed back in,
a device never leaves a phase it was deployed in; shares are then at least
``ceil(p_k * n)``. Without a floor, placement is exact but only stable for a fixed population.

A phase may also give ``min_devices``, a floor on its cumulative size over the whole target:
the phase then holds the ``min_devices`` lowest buckets if that is more than its percent
(split over strata in proportion to their size, ``ceil(m * n_j / n)`` each), still by the same
hash order and never below an earlier phase, so phases stay nested. Such a threshold depends
on the population, so unstratified thresholds then take the sticky floor too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BUCKETS = 10_000
FLEET_SALT = "edgeplat-fleet-v1"
UNSTRATIFIED = "*"


def rollout_salt(name: str, rollout_id: str, scope: str = "per_rollout") -> str:
    """The salt for a rollout: its name and id (a fresh device order), or the fixed fleet salt."""
    if scope == "fleet":
        return FLEET_SALT
    if scope != "per_rollout":
        raise ValueError(f"unknown salt scope {scope!r}; use 'per_rollout' or 'fleet'")
    return f"{name}:{rollout_id}"


def _key(salt: str) -> bytes:
    # BLAKE2b keys are at most 64 bytes: hash the salt down to a fixed 32-byte key.
    return hashlib.blake2b(salt.encode(), digest_size=32, person=b"edgeplat-salt").digest()


def bucket(salt: str, device_id: str) -> int:
    """The device's bucket in [0, 10000) under ``salt``."""
    digest = hashlib.blake2b(device_id.encode(), key=_key(salt), digest_size=8).digest()
    return int.from_bytes(digest, "little") % BUCKETS


def buckets(salt: str, device_ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``bucket`` for many devices at once, as a uint16 array in input order."""
    if isinstance(device_ids, pa.Array | pa.ChunkedArray):
        device_ids = device_ids.to_pylist()
    base = hashlib.blake2b(key=_key(salt), digest_size=8)
    out = bytearray()
    # Copying a keyed hasher skips re-keying per device: the loop is the whole cost.
    for d in device_ids:
        h = base.copy()
        h.update(d.encode())
        out += h.digest()
    return (np.frombuffer(bytes(out), dtype="<u8") % BUCKETS).astype(np.uint16)


def phase_thresholds(percents: Sequence[float]) -> list[float]:
    """Unstratified bucket thresholds: phase k holds ``bucket < threshold[k]``."""
    _check_percents(percents)
    return [float(BUCKETS) if p >= 100 else p * BUCKETS / 100 for p in percents]


def _check_percents(percents: Sequence[float]) -> None:
    if not percents:
        raise ValueError("give at least one phase percent")
    for i, p in enumerate(percents):
        if not 0 < p <= 100:
            raise ValueError(f"phases_percent[{i}] = {p}: must be in (0, 100]")
        if i and p <= percents[i - 1]:
            raise ValueError(
                f"phases_percent[{i}] = {p}: phases must increase ({p:g} after {percents[i - 1]:g})"
            )


@dataclass
class Assignment:
    """Phase per device. ``phase[i]`` is the first phase that includes device ``i`` (-1: none yet).

    ``thresholds`` maps each stratum (``"*"`` when unstratified) to its per-phase bucket
    thresholds; record them with the deploy and pass them back as ``floor`` next time.
    """

    device_ids: list[str]
    buckets: np.ndarray
    phase: np.ndarray
    thresholds: dict[str, list[float]] = field(default_factory=dict)
    strata: np.ndarray | None = None  # stratum label per device (object array)

    def in_phase(self, k: int) -> np.ndarray:
        """Boolean mask of devices that run the release once phase ``k`` is deployed."""
        return (self.phase >= 0) & (self.phase <= k)

    def devices_in_phase(self, k: int) -> list[str]:
        mask = self.in_phase(k)
        return [d for d, m in zip(self.device_ids, mask, strict=True) if m]

    def to_arrow(self) -> pa.Table:
        cols: dict[str, Any] = {"device_id": self.device_ids, "bucket": self.buckets, "phase": self.phase}
        if self.strata is not None:
            cols["stratum"] = self.strata
        return pa.table(cols)


def _columns(devices: Any, stratify_by: str | None) -> tuple[list[str], pa.Array | None]:
    """Device ids and (if stratified) stratum labels from an Arrow table or a list of dicts/tuples."""
    tag = stratify_by[4:] if stratify_by and stratify_by.startswith("tag:") else None
    if stratify_by not in (None, "tenant") and tag is None:
        raise ValueError(f"bad stratify_by {stratify_by!r}: use None, 'tenant' or 'tag:<name>'")
    if isinstance(devices, pa.Table):
        if "device_id" not in devices.column_names:
            raise ValueError(f"device table needs a device_id column; has {devices.column_names}")
        ids = devices.column("device_id").to_pylist()
        if stratify_by is None:
            return ids, None
        if stratify_by == "tenant":
            return ids, pc.cast(devices.column("tenant_id"), pa.string()).combine_chunks()
        if tag in devices.column_names:
            col = devices.column(tag)
        elif "tags" in devices.column_names:
            tags = devices.column("tags")
            if pa.types.is_map(tags.type):
                col = pc.map_lookup(tags, pa.scalar(tag, tags.type.key_type), "first")
            else:
                col = pc.struct_field(tags, tag)
        else:
            raise ValueError(f"stratify_by {stratify_by!r}: device table has no {tag!r} or 'tags' column")
        return ids, pc.fill_null(pc.cast(col, pa.string()), "").combine_chunks()
    ids, strata = [], []
    for d in devices:
        if isinstance(d, Mapping):
            ids.append(d["device_id"])
            if stratify_by == "tenant":
                strata.append(str(d["tenant_id"]))
            elif tag is not None:
                strata.append(str((d.get("tags") or {}).get(tag, "")))
        else:  # (device_id, tenant_id, tags?) tuples
            ids.append(d[0])
            if stratify_by == "tenant":
                strata.append(str(d[1]))
            elif tag is not None:
                strata.append(str((d[2] if len(d) > 2 else {}).get(tag, "")))
    return ids, (pa.array(strata, pa.string()) if stratify_by else None)


def _rank_threshold(s: np.ndarray, m: int) -> float:
    """The threshold holding the ``m`` lowest of the sorted buckets ``s``."""
    m = min(m, len(s))
    return float(s[m - 1]) + 1 if m > 0 else 0.0


def _stratum_thresholds(
    s: np.ndarray,
    percents: Sequence[float],
    floor: Sequence[float] | None,
    minimum: Sequence[int] = (),
) -> list[float]:
    """Per-phase thresholds giving ``max(ceil(p * n), minimum[k])`` devices of a stratum (``s``: its
    sorted buckets), never below ``floor``."""
    n = len(s)
    out: list[float] = []
    for k, p in enumerate(percents):
        if p >= 100:
            t = float(BUCKETS)  # everyone, including devices that register later
        else:
            m = max(math.ceil(p * n / 100 - 1e-9), minimum[k] if k < len(minimum) else 0)
            t = _rank_threshold(s, m)
        if floor is not None and k < len(floor):
            t = max(t, float(floor[k]))
        if out:
            t = max(t, out[-1])
        out.append(t)
    return out


def assign_phases(
    devices: Any,
    phases_percent: Sequence[float],
    salt: str,
    stratify_by: str | None = None,
    floor: Mapping[str, Sequence[float]] | None = None,
    min_devices: Sequence[int | None] | None = None,
) -> Assignment:
    """Place devices into phases (see the module docstring for the rule and its stability).

    ``devices``: an Arrow table (``device_id``, ``tenant_id``, and a ``tags`` map/struct or
    one column per tag) or a list of dicts ``{"device_id", "tenant_id", "tags"}`` or tuples
    ``(device_id, tenant_id, tags)``. ``floor``: thresholds from ``Assignment.thresholds``
    at the previous deploy. ``min_devices``: per phase, a floor on its size over the target.
    """
    _check_percents(phases_percent)
    ids, strata = _columns(devices, stratify_by)
    b = buckets(salt, ids)
    mins = [int(m or 0) for m in (min_devices or [])]
    if strata is None:
        thr = phase_thresholds(phases_percent)
        if any(mins):
            sb = np.sort(b)
            floor_u = (floor or {}).get(UNSTRATIFIED) or []
            for k in range(len(thr)):
                if thr[k] < BUCKETS:
                    thr[k] = max(thr[k], _rank_threshold(sb, mins[k] if k < len(mins) else 0))
                if k < len(floor_u):
                    thr[k] = max(thr[k], float(floor_u[k]))
                if k:
                    thr[k] = max(thr[k], thr[k - 1])
        first = np.searchsorted(np.asarray(thr), b, side="right")  # first k with b < thr[k]
        phase = np.where(first < len(thr), first, -1).astype(np.int16)
        return Assignment(ids, b, phase, {UNSTRATIFIED: thr})
    encoded = strata.dictionary_encode()
    labels = encoded.dictionary.to_pylist()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # One sort by (stratum, bucket) gives every stratum's sorted buckets as a slice.
    order = np.lexsort((b, codes))
    sorted_b = b[order]
    starts = np.searchsorted(codes[order], np.arange(len(labels) + 1))
    thresholds: dict[str, list[float]] = {}
    table = np.empty((len(labels), len(phases_percent)))
    total = len(b)
    for j, label in enumerate(labels):
        size = int(starts[j + 1] - starts[j])
        share = [math.ceil(m * size / total - 1e-9) for m in mins]
        t = _stratum_thresholds(
            sorted_b[starts[j] : starts[j + 1]], phases_percent, (floor or {}).get(label), share
        )
        thresholds[label] = t
        table[j] = t
    inside = b[:, None] < table[codes]
    phase = np.where(inside.any(axis=1), inside.argmax(axis=1), -1).astype(np.int16)
    return Assignment(ids, b, phase, thresholds, np.asarray(labels, dtype=object)[codes])
