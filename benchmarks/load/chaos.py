"""`make chaos`: a thousand uploads through crashes and outages; nothing lost, nothing twice.

    .venv/bin/python -m benchmarks.load.chaos [--uploads 1000] [--users 24] [--workers 2]
        [--schedule full|short] [--photos full|light] [--out DIR]

Starts a private platform (benchmarks/load/rig.py: its own RabbitMQ node and Redis, the
stack of `make run` with --workers inference workers sharing the queue, all on loopback),
runs Locust's users until --uploads uploads were accepted, and meanwhile injects the faults
of the schedule it prints first (benchmarks/load/faults.py). When the platform has settled it
reconciles every upload (benchmarks/load/reconcile.py), prints the report, and writes
report.json, timeline.png (throughput and latency, faults shaded), the client journal,
Locust's CSVs and the services' logs to --out (default benchmarks/results/chaos-<time>).

Exit status 0 only if nothing was lost or duplicated, every failure has a reason, every fault
was injected and no process of the run is left behind."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.load import reconcile, timeline
from benchmarks.load.faults import SCHEDULES, FaultRecord, inject
from benchmarks.load.rig import BUCKET, EXCHANGE, QUEUE_PREFIX, Rig
from benchmarks.load.runs import locust_stats, read_stores_retrying, results_dir, wait_for_locust, write_json

SETTLE_LIMIT_SECONDS = 3600


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=1000, help="accepted uploads to make")
    parser.add_argument("--users", type=int, default=24, help="Locust users (each its own test number)")
    parser.add_argument("--workers", type=int, default=2, help="inference worker processes")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="full")
    parser.add_argument("--photos", choices=("full", "light"), default="full")
    parser.add_argument("--wait", type=float, nargs=2, default=(0.5, 2.0), help="a user's pause between actions, s")
    parser.add_argument("--max-load-seconds", type=int, default=900, help="the load stops by then at the latest")
    parser.add_argument(
        "--stall-seconds", type=int, default=180, help="stop waiting for the backlog after this long without progress"
    )
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def log(origin: float, message: str) -> None:
    print(f"[{time.time() - origin:6.1f} s] {message}", flush=True)


def run(args: argparse.Namespace, out: Path) -> tuple[bool, list[str]]:
    journal = out / "journal.jsonl"
    problems: list[str] = []
    with Rig(out, workers=args.workers, users=args.users) as rig:
        schedule = SCHEDULES[args.schedule](rig.worker_names())
        print(
            f"chaos run: {args.uploads} uploads by {args.users} users, {args.workers} inference workers "
            f"({', '.join(rig.worker_names())}), photos: {args.photos}; results in {out}\nfault schedule:",
            flush=True,
        )
        for fault in schedule:
            print(f"  {fault.describe()}", flush=True)
        reconcile.declare_tap(rig.rabbitmq.url, EXCHANGE)
        locust = rig.start_locust(journal, args.uploads, args.max_load_seconds, args.photos, tuple(args.wait))
        origin = time.time()
        deadline = time.monotonic() + args.max_load_seconds + 60
        records: list[FaultRecord] = []
        pending = list(schedule)

        def tick() -> None:
            rig.supervise()
            while pending and time.time() - origin >= pending[0].at:
                fault = pending.pop(0)
                log(origin, fault.action())
                record = inject(rig, fault)
                records.append(record)
                log(origin, f"  ... {'FAILED: ' + record.error if record.error else 'back'}")

        wait_for_locust(locust, deadline, tick)
        log(origin, f"load stopped (Locust exit code {locust.returncode})")
        while pending:  # faults due after the uploads ended still hit the backlog
            tick()
            time.sleep(0.2)
        load_stopped = time.time()
        settled = reconcile.settle(
            rig.mongo_url, rig.rabbitmq.url, QUEUE_PREFIX, args.stall_seconds, SETTLE_LIMIT_SECONDS, rig.supervise
        )
        log(origin, f"settled after {settled:.0f} s; reconciling")
        stores = read_stores_retrying(rig.mongo_url)
        report = reconcile.build_report(
            reconcile.read_journal(journal),
            stores,
            reconcile.list_bucket(rig.s3_endpoint, BUCKET),
            reconcile.drain_tap(rig.rabbitmq.url, limit=20 * args.uploads),
            reconcile.dead_letters(rig.rabbitmq.url, QUEUE_PREFIX),
            reconcile.queue_depths(rig.rabbitmq.url, QUEUE_PREFIX),
            settled,
        )
        timings = timeline.timings(reconcile.read_journal(journal), stores)
        timeline.write_timings(out / "timings.jsonl", timings)
        spans = [timeline.Span(record.label, record.started, record.ended) for record in records]
        timeline.plot(
            out / "timeline.png",
            timeline.chaos_title(report.headline(), args.workers),
            timings,
            spans,
            origin,
        )
        problems += [
            f"fault not injected: {record.fault.describe()}: {record.error}" for record in records if record.error
        ]
        write_json(
            out / "report.json",
            {
                "kind": "chaos",
                "command": " ".join(sys.argv),
                "options": {key: value for key, value in vars(args).items() if key != "out"},
                "started": origin,
                "load_seconds": round(load_stopped - origin, 1),
                "schedule": [fault.describe() for fault in schedule],
                "faults": [record.to_json() for record in records],
                "process_events": [vars(event) for event in rig.process_events],
                "report": report.to_json(),
                "lines": report.lines(),
                "timeline": timeline.summary(timings),
                "locust": locust_stats(journal),
            },
        )
        for event in rig.process_events:
            problems.append(f"{event.name} {event.what} at t+{event.at - origin:.0f} s (started again)")
        print("\n".join(report.lines()), flush=True)
        passed = report.passed
    leftovers = rig.leftover_processes()
    if leftovers:
        problems.append(f"processes left behind: {leftovers}")
    return passed and not leftovers and not any(p.startswith("fault not") for p in problems), problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = results_dir("chaos", args.out)
    passed, problems = run(args, out)
    for problem in problems:
        print(f"note: {problem}", flush=True)
    print(f"results: {out / 'report.json'}, {out / 'timeline.png'}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
