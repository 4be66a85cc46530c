"""Run the benchmarks: ``python -m bench [--quick] [name ...]`` (names like ``record``)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import bench
from bench.harness import RESULTS, Result, print_table, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. record batch_size")
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole set in minutes")
    args = parser.parse_args(argv)
    available = sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    unknown = set(args.names) - set(available)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; available: {', '.join(available)}")
    results: list[Result] = []
    for name in args.names or available:
        print(f"== bench_{name} {'(quick)' if args.quick else ''}", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        got = module.run(quick=args.quick)
        results.extend(got)
        write_results(got)
    print_table(results)
    print(f"results written to {RESULTS}")
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
