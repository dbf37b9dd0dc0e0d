"""Runs every benchmark, each in its own process (moto's backends are process-global),
then regenerates bench/README.md's figures and charts from the results (bench.report).

    python -m bench.run [--only NAME ...] [--no-report] [-- extra args for every benchmark]

Each benchmark prints its own table and writes bench/results/<name>.json. The exit code
is the first non-zero exit code of a benchmark (1 incorrect result, 2 over a budget);
the report is regenerated either way (a result over budget is a result)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import ROOT

# name -> the module and its arguments; each module's main() takes its own flags (--help)
BENCHMARKS: dict[str, list[str]] = {
    "intake": ["bench.intake"],
    "small_files": ["bench.small_files"],
    # the same with 100 KiB of metadata per job: bytes written per file must not move
    "small_files_metadata_100kib": [
        "bench.small_files", "--metadata-kb", "100", "--name", "small_files_metadata_100kib",
    ],
    "stream_128mib": [
        "bench.stream_1gib", "--size-mb", "128", "--output", "bench/results/stream_128mib.json",
    ],
    "stream_1gib": ["bench.stream_1gib"],
    "scale_files": ["bench.scale_files"],
    "scaling": ["bench.scaling"],
    "inflight": ["bench.inflight"],
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description="Run the benchmarks")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS))
    parser.add_argument("--no-report", action="store_true", help="leave bench/README.md alone")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)

    outcomes: list[tuple[str, int, float]] = []
    for name in names:
        print(f"=== {name} ===", flush=True)
        began = time.monotonic()
        module, *flags = BENCHMARKS[name]
        code = subprocess.call([sys.executable, "-m", module, *flags, *extra], cwd=ROOT)
        outcomes.append((name, code, time.monotonic() - began))

    print("\n=== summary ===")
    verdicts = {0: "ok", 1: "INCORRECT", 2: "OVER BUDGET"}
    for name, code, seconds in outcomes:
        print(f"{name:<20} {verdicts.get(code, f'exit {code}'):<12} {seconds:6.0f}s")
    if not args.no_report:
        from bench import report

        report.main([])
    return next((code for _, code, _ in outcomes if code != 0), 0)


if __name__ == "__main__":
    raise SystemExit(main())
