"""The short chaos run inside `make test`: about a hundred uploads by Locust users while an
inference worker is SIGKILLed and the broker is stopped and started (`rabbitmqctl stop_app` /
`start_app`), against a RabbitMQ node and a Redis of the run's own, never the machine's shared
ones. `make chaos` is the long version (a thousand uploads, every kind of fault)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_uploads_through_a_killed_worker_and_a_broker_outage_are_neither_lost_nor_doubled(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    command = [
        sys.executable,
        "-m",
        "benchmarks.load.chaos",
        "--uploads",
        "100",
        "--users",
        "8",
        "--workers",
        "2",
        "--schedule",
        "short",
        "--photos",
        "light",
        "--max-load-seconds",
        "240",
        "--stall-seconds",
        "120",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=560)
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert (out / "report.json").exists(), output
    document = json.loads((out / "report.json").read_text())
    report = document["report"]

    assert report["accepted"] >= 100, output
    assert report["lost"] == 0, report["lost_uploads"]
    assert report["duplicated"] == 0, report["duplicated_uploads"]
    assert report["failed_without_reason"] == 0, report["failure_reasons"]
    assert report["done"] + report["failed"] == report["accepted"]
    assert report["queues_left"] and not any(report["queues_left"].values())
    # The tap saw every event it reconciles: one upload event and one outcome per accepted upload.
    assert report["upload_distinct"] == report["accepted"] == report["outcome_distinct"], report
    assert document["lines"][0] == (
        f"{report['accepted']} accepted, {report['done']} done, {report['failed']} failed, 0 lost, 0 duplicated"
    )

    # Both faults happened while uploads were under way: some upload was accepted before the
    # fault was over and ended after it had begun.
    faults = document["faults"]
    assert [(fault["kind"], fault["error"]) for fault in faults] == [("kill", ""), ("broker", "")]
    timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    for fault in faults:
        during = [t for t in timings if t["accepted_at"] < fault["ended"] and (t["ended_at"] or 0) > fault["started"]]
        assert during, fault
    assert (out / "timeline.png").stat().st_size > 10_000
    assert result.returncode == 0, output
