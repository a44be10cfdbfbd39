"""The benchmark harness: `./dev bench` (= `python -m bench`).

    python -m bench                       # everything, about 17 minutes on 2 cores
    python -m bench --quick               # a short smoke run of every scenario
    python -m bench --scenario fanout-1000,echo-100 --servers ours,websockets

Servers run pinned to CPU 0, this process (the load) to CPU 1. A full run writes
bench/results/<UTC timestamp>.json, bench/results/latest.md and latest.png; a quick or
partial run writes the same under bench/results/partial/ (not committed). See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.metrics import machine_info, median
from bench.progress import Progress
from bench.scenarios import Context, Plan, run_scenario, scenarios, with_overrides
from bench.servers import KINDS, LOAD_CPU, ROOT, SERVER_CPU, can_pin, pin_load, raise_nofile

RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark our server against reference servers."
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (~2 minutes)")
    parser.add_argument("--scenario", help="comma-separated scenario names (default: all)")
    parser.add_argument(
        "--servers", help=f"comma-separated servers (default: all of {', '.join(KINDS)})"
    )
    parser.add_argument("--repeats", type=int, help="runs per scenario and server")
    parser.add_argument("--measure", type=float, help="seconds measured per run")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser.parse_args(argv)


def pick(names: str | None, known: list[str], what: str) -> list[str]:
    if not names:
        return known
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


async def run(args: argparse.Namespace) -> int:
    # SIGTERM cancels the run like Ctrl-C does, so every server and Redis is stopped.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    plan = Plan.quick() if args.quick else Plan()
    plan = with_overrides(plan, repeats=args.repeats, measure=args.measure)
    every = scenarios(plan)
    if args.list:
        for s in every:
            print(f"{s.name:16s} {s.title}")
        return 0
    names = pick(args.scenario, [s.name for s in every], "scenario")
    kinds = [KINDS[k] for k in pick(args.servers, list(KINDS), "server")]
    chosen = [s for s in every if s.name in names]
    skipped = [s.name for s in chosen if not any(k.key in s.kinds for k in kinds)]
    chosen = [s for s in chosen if s.name not in skipped]
    if not chosen:
        raise SystemExit(f"none of the chosen servers takes part in {', '.join(skipped)}")
    full = not (args.quick or args.scenario or args.servers or args.repeats or args.measure)

    progress = Progress()
    for name in skipped:
        progress.line(f"skipping {name}: none of the chosen servers takes part in it")
    if not can_pin():
        progress.line("warning: fewer than 2 CPUs: servers and load share the CPU")
    started = time.time()
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    results: dict = {
        "schema": 1,
        "started_utc": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "full_run": full,
        "argv": sys.argv[1:],
        "git": report.git_info(),
        "machine": machine_info(),
        "placement": {
            "pinned": can_pin(),
            "server_cpu": SERVER_CPU,
            "load_cpu": LOAD_CPU,
            "open_files": raise_nofile(),
        },
        "packages": report.package_versions(),
        "plan": dataclasses.asdict(plan),
        "servers": {
            k.key: {"label": k.label, "describe": k.describe, "reference": k.reference}
            for k in kinds
        },
        "scenarios": [],
    }
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ctx = Context(plan, progress, Path(tmp))
        for i, scenario in enumerate(chosen, 1):
            index = f"[{i}/{len(chosen)}]"
            result = await run_scenario(ctx, scenario, kinds, index)
            gc.collect()
            failures += len(result.errors)
            results["scenarios"].append(
                {
                    "name": scenario.name,
                    "title": scenario.title,
                    "about": scenario.about,
                    "params": result.params,
                    "headline": scenario.headline,
                    "references": list(scenario.references),
                    "targets": [dataclasses.asdict(t) for t in scenario.targets],
                    "metrics": [dataclasses.asdict(m) for m in scenario.metrics],
                    "servers": [k.key for k in kinds if k.key in scenario.kinds],
                    "median": {
                        kind: {
                            m.key: median(run.get(m.key) for run in runs) for m in scenario.metrics
                        }
                        for kind, runs in result.runs.items()
                    },
                    "runs": result.runs,
                    "errors": result.errors,
                }
            )
    results["duration_s"] = round(time.time() - started, 1)
    out_dir = RESULTS if full else RESULTS / "partial"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    markdown = report.markdown(results)
    (out_dir / "latest.md").write_text(markdown)
    chart = report.chart(results, out_dir / "latest.png")
    print()
    print(markdown)
    progress.line(f"finished in {results['duration_s'] / 60:.1f} min")
    progress.line(f"raw figures: {json_path.relative_to(ROOT)}")
    progress.line(f"table:       {(out_dir / 'latest.md').relative_to(ROOT)}")
    if chart is not None:
        progress.line(f"chart:       {chart.relative_to(ROOT)}")
    if failures:
        progress.line(f"{failures} server/scenario pair(s) FAILED: see the tables above")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_load()
    import uvloop

    gc.freeze()
    try:
        return uvloop.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: servers stopped, no results written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
