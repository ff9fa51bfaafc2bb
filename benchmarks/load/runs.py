"""What the chaos and load runs share: where results go, Locust's own statistics, waiting for
Locust within a bound, and reading the platform's state once a run has settled."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load.reconcile import Stores, read_stores
from benchmarks.load.rig import ROOT

RESULTS = ROOT / "benchmarks" / "results"


def results_dir(kind: str, given: Path | None) -> Path:
    folder = given or RESULTS / f"{kind}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def locust_stats(journal: Path) -> dict[str, dict[str, Any]]:
    """Requests, failures and response-time percentiles per endpoint, from Locust's CSV."""
    path = journal.with_suffix("").with_name(journal.stem + "_stats.csv")
    if not path.exists():
        return {}
    stats = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            name = f"{row['Type']} {row['Name']}".strip() if row["Type"] else row["Name"]
            stats[name] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "p50_ms": _number(row.get("50%")),
                "p99_ms": _number(row.get("99%")),
            }
    return stats


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def wait_for_locust(process: subprocess.Popen[bytes], deadline: float, tick: Callable[[], None]) -> None:
    """Until Locust exits (it stops itself when its budget is spent), at most until `deadline`
    (monotonic); then it is stopped."""
    try:
        while process.poll() is None and time.monotonic() < deadline:
            tick()
            time.sleep(0.2)
    finally:
        stop_locust(process)


def stop_locust(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_stores_retrying(mongo_url: str, attempts: int = 5) -> Stores:
    for attempt in range(attempts):
        try:
            return read_stores(mongo_url)
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
