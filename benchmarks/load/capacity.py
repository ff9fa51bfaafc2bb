"""`make load`: how fast the platform is end to end, with the classical backend.

    .venv/bin/python -m benchmarks.load.capacity [--uploads 150] [--paced-uploads 60] [--users 16] [--out DIR]

On a private platform (benchmarks/load/rig.py: its own RabbitMQ node and Redis, the stack of
`make run`, RESTORERS=classical), Locust's users (benchmarks/load/locustfile.py) run three phases,
each until its uploads were accepted and the platform has finished them:

1. one inference worker, users uploading with short pauses (more than the worker can take):
   accepted uploads per second, and finished images per second (the worker's throughput);
2. the same with two workers sharing the queue;
3. paced: two workers, a few users with longer pauses, so that the workers are mostly idle:
   the accepted→done time with the model's own time (the pipeline's duration_ms) taken out,
   p50 and p99: what the platform adds (queueing, events, storage, the history's update).

Throughput is measured between the first and the last event of a phase (first to last 202,
first to last finished image). It prints the figures and writes report.json and
timeline.png (throughput and latency over time, phases shaded) to --out (default
benchmarks/results/load-<time>). The machine's other work shares its cores: the load average
at the start and the end of each phase is recorded beside the figures."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load import breakdown, reconcile, timeline
from benchmarks.load.rig import QUEUE_PREFIX, Rig
from benchmarks.load.runs import locust_stats, read_stores_retrying, results_dir, wait_for_locust, write_json

GOAL_P50_MS = 25.0
GOAL_P99_MS = 100.0
PHASE_LIMIT_SECONDS = 900
STALL_SECONDS = 180
SETTLE_LIMIT_SECONDS = 1800


@dataclass(frozen=True)
class Phase:
    name: str
    label: str
    workers: int
    uploads: int
    users: int
    wait: tuple[float, float]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=150, help="uploads in each throughput phase")
    parser.add_argument("--paced-uploads", type=int, default=60, help="uploads in the paced (latency) phase")
    parser.add_argument("--users", type=int, default=16, help="Locust users in the throughput phases")
    parser.add_argument("--photos", choices=("full", "light"), default="full")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def phases(args: argparse.Namespace) -> list[Phase]:
    return [
        Phase("one-worker", "1 worker", 1, args.uploads, args.users, (0.05, 0.3)),
        Phase("two-workers", "2 workers", 2, args.uploads, args.users, (0.05, 0.3)),
        Phase("paced", "paced, 2 workers", 2, args.paced_uploads, 4, (1.0, 3.0)),
    ]


def set_workers(rig: Rig, count: int, stopped: dict[str, Any]) -> None:
    """Run `count` of the rig's workers: stop the others, start stopped ones again, and wait
    until the queue has that many consumers."""
    for name in rig.worker_names()[count:]:
        if name not in stopped:
            stopped[name] = rig.stop_process(name)
    for name in rig.worker_names()[:count]:
        if name in stopped:
            rig.start_process(stopped.pop(name))
    queue = f"{QUEUE_PREFIX}.inference.classical"  # the stack's workers serve classical
    deadline = time.monotonic() + 120
    while reconcile.consumer_count(rig.rabbitmq.url, queue) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue} did not get {count} consumers within 120 s")
        rig.supervise()
        time.sleep(1)


PHASE_COLORS = ("tab:cyan", "tab:olive", "tab:gray")


def run_phase(rig: Rig, phase: Phase, out: Path, photos: str, color: str) -> tuple[dict[str, Any], timeline.Span]:
    journal = out / f"journal-{phase.name}.jsonl"
    load_before = os.getloadavg()
    started = time.time()
    print(f"phase {phase.label}: {phase.uploads} uploads by {phase.users} users", flush=True)
    locust = rig.start_locust(journal, phase.uploads, PHASE_LIMIT_SECONDS, photos, phase.wait, users=phase.users)
    wait_for_locust(locust, time.monotonic() + PHASE_LIMIT_SECONDS + 60, rig.supervise)
    settled = reconcile.settle(
        rig.mongo_url, rig.rabbitmq.url, QUEUE_PREFIX, STALL_SECONDS, SETTLE_LIMIT_SECONDS, rig.supervise
    )
    ended = time.time()
    stores = read_stores_retrying(rig.mongo_url)
    items = timeline.timings(reconcile.read_journal(journal), stores, since=started)
    timeline.write_timings(out / f"timings-{phase.name}.jsonl", items)
    where = breakdown.stages(rig.log_dir, items)
    result = {
        "phase": phase.label,
        "workers": phase.workers,
        "users": phase.users,
        "user_pause_seconds": list(phase.wait),
        **timeline.summary(items),
        "overhead_stages_ms": where,
        "not_ended": sum(1 for item in items if item.ended_at is None),
        "settled_seconds": round(settled, 1),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "locust": locust_stats(journal),
        "started": started,
        "ended": ended,
        "color": color,
    }
    print(f"  {describe(result)}", flush=True)
    return result, timeline.Span(phase.label, started, ended, color=color)


def describe(result: dict[str, Any]) -> str:
    overhead, latency = result["overhead_ms"], result["latency_ms"]
    return (
        f"{result['uploads']} uploads: {result['accepted_per_second']} accepted uploads/s, "
        f"{result['finished_per_second']} finished images/s; accepted→done p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms; minus the model's time p50 {overhead['p50']} ms, p99 {overhead['p99']} ms"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = results_dir("load", args.out)
    results: list[dict[str, Any]] = []
    spans: list[timeline.Span] = []
    with Rig(out, workers=2, users=args.users) as rig:
        origin = time.time()
        stopped: dict[str, Any] = {}
        for phase, color in zip(phases(args), PHASE_COLORS, strict=True):
            set_workers(rig, phase.workers, stopped)
            result, span = run_phase(rig, phase, out, args.photos, color)
            results.append(result)
            spans.append(span)
        stores = read_stores_retrying(rig.mongo_url)
        journal = [entry for path in sorted(out.glob("journal-*.jsonl")) for entry in reconcile.read_journal(path)]
        items = timeline.timings(journal, stores)
        one, two, paced = results
        lines = [
            f"classical backend, 1 worker:  {one['accepted_per_second']} accepted uploads/s, "
            f"{one['finished_per_second']} finished images/s ({one['uploads']} uploads)",
            f"classical backend, 2 workers: {two['accepted_per_second']} accepted uploads/s, "
            f"{two['finished_per_second']} finished images/s ({two['uploads']} uploads)",
            f"accepted→done minus the model's own time (paced, 2 workers, {paced['uploads']} uploads at "
            f"{paced['accepted_per_second']}/s): p50 {paced['overhead_ms']['p50']} ms, "
            f"p99 {paced['overhead_ms']['p99']} ms (goal: p50 ≤ {GOAL_P50_MS:g} ms, p99 ≤ {GOAL_P99_MS:g} ms); "
            f"the model itself p50 {paced['model_ms']['p50']} ms",
            "where that goes, p50 / p99 ms: "
            + ", ".join(
                f"{name.replace('_', ' ')} {stage['p50']} / {stage['p99']}"
                for name, stage in paced["overhead_stages_ms"].items()
            ),
        ]
        timeline.plot(
            out / "timeline.png",
            timeline.LOAD_TITLE,
            items,
            spans,
            origin,
        )
        write_json(
            out / "report.json",
            {
                "kind": "load",
                "command": " ".join(sys.argv),
                "options": {key: value for key, value in vars(args).items() if key != "out"},
                "cpus": os.cpu_count(),
                "started": origin,
                "phases": results,
                "lines": lines,
                "goal_ms": {"p50": GOAL_P50_MS, "p99": GOAL_P99_MS},
            },
        )
    print("\n".join(lines), flush=True)
    print(f"results: {out / 'report.json'}, {out / 'timeline.png'}", flush=True)
    leftovers = rig.leftover_processes()
    if leftovers:
        print(f"processes left behind: {leftovers}", flush=True)
    return 1 if leftovers or any(result["not_ended"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
