"""The knobs of a fleet simulation (the ``edgeplat simulate`` flags map one to one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: simulated time starts here by default
PLATFORMS = ("greengrass", "iot_edge")
CRASH_POINTS = ("read", "encoded", "before_put", "after_put", "put", "acked", "evictions_confirmed")


@dataclass(frozen=True)
class SimulationConfig:
    """A fleet and what happens to it over simulated time.

    Rates are per device. ``offline_fraction`` is the fraction of devices that lose their
    link during the run (each for an exponential outage of mean ``outage_minutes``);
    with ``leave_offline`` their last outage lasts to the end and their caches are not
    drained. ``crash_rate`` is the probability that a sync kills the agent mid-upload (at
    a random step of the upload protocol; it restarts and resumes at its next sync).
    ``clock_skew_s`` bounds each device's constant wall-clock error (uniform in +-bound).
    """

    devices: int = 10
    tenants: int = 2
    hours: float = 1.0
    offline_fraction: float = 0.1
    outage_minutes: float = 30.0
    clock_skew_s: float = 0.0
    crash_rate: float = 0.0
    seed: int = 0
    leave_offline: bool = False
    telemetry_interval_s: float = 10.0
    metrics_per_sample: int = 3
    release: str = "1.0.0"
    sync_interval_min: int = 15
    log_rate_per_min: float = 0.5
    alert_rate_per_hour: float = 0.5
    device_edit_rate_per_hour: float = 1.0
    central_edit_rate_per_hour: float = 0.5
    start_ms: int = EPOCH_MS
    platforms: tuple[str, ...] = PLATFORMS
    cache_max_bytes: int | None = None
    drain_rounds: int = 5
    keep_open_max: int = 64  # fleets up to this size keep their caches open between steps
    workers: int = 1
    tags: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"region": ("eu", "us", "ap"), "hw": ("rev-a", "rev-b")}
    )

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"SimulationConfig: {what}")

        need(self.devices >= 1, f"devices must be >= 1, got {self.devices}")
        need(
            1 <= self.tenants <= self.devices,
            f"tenants must be 1..devices ({self.devices}), got {self.tenants}",
        )
        need(self.hours > 0, f"hours must be > 0, got {self.hours}")
        need(
            0.0 <= self.offline_fraction <= 1.0,
            f"offline_fraction must be within 0..1, got {self.offline_fraction}",
        )
        need(self.outage_minutes > 0, f"outage_minutes must be > 0, got {self.outage_minutes}")
        need(
            self.clock_skew_s >= 0,
            f"clock_skew_s is a maximum absolute skew, must be >= 0, got {self.clock_skew_s}",
        )
        need(
            0.0 <= self.crash_rate <= 1.0,
            f"crash_rate is a probability per sync (0..1), got {self.crash_rate}",
        )
        need(
            1.0 <= self.telemetry_interval_s <= 3600,
            f"telemetry_interval_s must be 1..3600, got {self.telemetry_interval_s}",
        )
        need(
            1 <= self.metrics_per_sample <= 8,
            f"metrics_per_sample must be 1..8, got {self.metrics_per_sample}",
        )
        need(
            1 <= self.sync_interval_min <= 24 * 60,
            f"sync_interval_min must be 1..1440, got {self.sync_interval_min}",
        )
        need(bool(self.release), "release (the initial version) must be non-empty")
        need(
            bool(self.platforms) and set(self.platforms) <= set(PLATFORMS),
            f"platforms must be a non-empty subset of {PLATFORMS}, got {self.platforms}",
        )
        need(self.drain_rounds >= 1, f"drain_rounds must be >= 1, got {self.drain_rounds}")
        need(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        for name in (
            "log_rate_per_min",
            "alert_rate_per_hour",
            "device_edit_rate_per_hour",
            "central_edit_rate_per_hour",
        ):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def minutes(self) -> int:
        return max(1, round(self.hours * 60))

    def as_dict(self) -> dict:
        return asdict(self)
