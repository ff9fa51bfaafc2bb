"""Where the accepted→done overhead goes, from the services' JSON logs joined by trace id.

For each restored upload (the upload's trace continues through the worker):
- queue: upload's `upload_accepted` → the worker publishes `image.processing` (it has the message);
- worker beyond the model: → the worker publishes `image.restored`, minus the pipeline's own
  duration_ms (reading the original, storing three results, publishing);
- history: → the history records done (the item's updated_at_ms);
- to the client: `upload_accepted` → the client has the 202 (subtracted: the overhead counts
  from the 202).
overhead = queue + worker beyond the model + history - to the client."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.load.timeline import Timing, percentiles


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(errors="replace") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "timestamp" in entry:
                yield entry


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def stages(log_dir: Path, items: Sequence[Timing]) -> dict[str, dict[str, float | None]]:
    accepted: dict[str, float] = {}
    image_of_trace: dict[str, str] = {}
    for entry in _entries(log_dir / "upload.log"):
        if entry.get("event") == "upload_accepted":
            accepted[entry["image_id"]] = _seconds(entry["timestamp"])
            image_of_trace[entry.get("trace_id", "")] = entry["image_id"]
    started: dict[str, float] = {}
    published: dict[str, float] = {}
    for path in sorted(log_dir.glob("inference*.log")):
        for entry in _entries(path):
            image_id = image_of_trace.get(entry.get("trace_id", ""))
            if image_id is None or entry.get("event") != "event_published":
                continue
            if entry.get("event_type") == "image.processing":
                started.setdefault(image_id, _seconds(entry["timestamp"]))
            elif entry.get("event_type") == "image.restored":
                published[image_id] = _seconds(entry["timestamp"])
    values: dict[str, list[float]] = {"queue": [], "worker_beyond_model": [], "history": [], "to_client": []}
    for item in items:
        image_id = item.image_id
        if item.status != "done" or item.ended_at is None:
            continue
        if image_id not in accepted or image_id not in started or image_id not in published:
            continue
        values["queue"].append((started[image_id] - accepted[image_id]) * 1000)
        values["worker_beyond_model"].append((published[image_id] - started[image_id]) * 1000 - item.model_ms)
        values["history"].append((item.ended_at - published[image_id]) * 1000)
        values["to_client"].append((item.accepted_at - accepted[image_id]) * 1000)
    return {name: {**percentiles(series), "count": len(series)} for name, series in values.items()}
