"""Shared benchmark plumbing: result records, timing, memory, the table and results.json.

Every benchmark module under ``bench/`` is named ``bench_<topic>.py`` and defines
``run(quick: bool) -> list[Result]``. Figures are ratios against a baseline timed in the
same process and run, because absolute times on shared machines are noise.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results.json"
SHARED_BENCH = BENCH_DIR.parent.parent / "shared" / "bench"


@dataclass
class Result:
    """One benchmark figure with its same-run baseline and the target it must meet.

    ``ratio`` is value / baseline_value. ``higher_is_better`` says which way the target
    points: for throughput the ratio must be >= target, for sizes and times <= target.
    """

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    target: float | None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("inf")

    @property
    def met(self) -> bool:
        if self.target is None:
            return True
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def record(self) -> dict:
        d = asdict(self)
        d.update(ratio=round(self.ratio, 4), met=self.met)
        return d


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of ``repeat`` wall-clock timings of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_telemetry(**kwargs):
    """The shared yardstick dataset (imported from ../shared/bench, never copied)."""
    if str(SHARED_BENCH) not in sys.path:
        sys.path.insert(0, str(SHARED_BENCH))
    from reference_telemetry import reference_telemetry as make  # type: ignore[import-not-found]

    return make(**kwargs)


def print_table(results: list[Result]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Benchmarks (baseline measured in the same run)")
    for col in ("benchmark", "value", "baseline", "baseline value", "ratio", "target", "met"):
        table.add_column(col, justify="right" if col not in ("benchmark", "baseline") else "left")
    for r in results:
        target = "-" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + f"{r.target:g}"
        table.add_row(
            r.name,
            f"{r.value:,.4g} {r.unit}",
            r.baseline,
            f"{r.baseline_value:,.4g} {r.unit}",
            f"{r.ratio:,.3g}×",
            target,
            "[green]yes[/]" if r.met else "[red]NO[/]",
        )
    Console().print(table)


def write_results(results: list[Result]) -> None:
    """Merge into bench/results.json by name, so running one benchmark keeps the others."""
    existing = []
    if RESULTS.exists():
        try:
            existing = json.loads(RESULTS.read_text())
        except ValueError:
            existing = []
    fresh = {r.name for r in results}
    merged = [e for e in existing if e.get("name") not in fresh] + [r.record() for r in results]
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
