"""Throughput and latency over a run, as numbers and as a PNG plot (matplotlib).

Per upload: accepted = when the client got its 202 (the journal; for an upload the client
never heard of, the job's creation time), ended = when the history recorded done or failed
(the item's updated_at_ms), model = the pipeline's own time (quality.duration_ms: decode,
detect, restore, measure, encode). The overhead is ended - accepted - model: queueing,
events, storage and bookkeeping, everything the platform adds to the model's work."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.load.reconcile import NOTE_PREFIX, Stores

BIN_SECONDS = 5.0
LOAD_TITLE = "make load: classical backend, 1 worker, 2 workers, then paced"


@dataclass(frozen=True)
class Timing:
    image_id: str
    accepted_at: float
    ended_at: float | None
    status: str
    model_ms: float

    @property
    def latency_ms(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.accepted_at) * 1000

    @property
    def overhead_ms(self) -> float | None:
        latency = self.latency_ms
        return None if latency is None or self.status != "done" else latency - self.model_ms


@dataclass(frozen=True)
class Span:
    """A stretch of the run to mark: a fault (red) or a phase of a load run (another colour)."""

    label: str
    start: float
    end: float
    color: str = "tab:red"


def timings(journal: list[dict[str, Any]], stores: Stores, since: float = 0.0) -> list[Timing]:
    """One Timing per job of this run accepted at or after `since` (epoch seconds)."""
    first_202: dict[str, float] = {}
    for entry in journal:
        if entry["e"] == "accepted":
            first_202.setdefault(entry["id"], entry["t"])
    result = []
    for image_id, job in stores.jobs.items():
        if not str(job.get("note", "")).startswith(NOTE_PREFIX):
            continue
        accepted = first_202.get(image_id, job.get("created_at_ms", 0) / 1000)
        if accepted < since:
            continue
        item = stores.items.get(image_id, {})
        status = str(item.get("status", "none"))
        ended = item["updated_at_ms"] / 1000 if status in ("done", "failed") and item.get("updated_at_ms") else None
        model = float((item.get("quality") or {}).get("duration_ms", 0.0))
        result.append(Timing(image_id, accepted, ended, status, model))
    return sorted(result, key=lambda timing: timing.accepted_at)


def write_timings(path: Path, items: Sequence[Timing]) -> None:
    """One JSON line per upload: id, status, accepted_at, ended_at (epoch s), model_ms."""
    path.write_text("".join(json.dumps(asdict(timing)) + "\n" for timing in items))


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    array = np.asarray(values, dtype=float)
    return {
        "p50": round(float(np.percentile(array, 50)), 1),
        "p99": round(float(np.percentile(array, 99)), 1),
        "max": round(float(array.max()), 1),
    }


def rate(times: Sequence[float]) -> float | None:
    """Events per second from the first to the last of `times`."""
    if len(times) < 2 or max(times) <= min(times):
        return None
    return round((len(times) - 1) / (max(times) - min(times)), 2)


def summary(items: Sequence[Timing]) -> dict[str, Any]:
    ended = [timing.ended_at for timing in items if timing.ended_at is not None]
    done = [timing for timing in items if timing.status == "done"]
    return {
        "uploads": len(items),
        "accepted_per_second": rate([timing.accepted_at for timing in items]),
        "finished_per_second": rate(ended),
        "latency_ms": percentiles([t.latency_ms for t in done if t.latency_ms is not None]),
        "model_ms": percentiles([t.model_ms for t in done]),
        "overhead_ms": percentiles([t.overhead_ms for t in done if t.overhead_ms is not None]),
    }


def _per_second(times: Sequence[float], start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    edges = np.arange(start, max(end, start + BIN_SECONDS) + BIN_SECONDS, BIN_SECONDS)
    counts, _ = np.histogram(np.asarray(times, dtype=float), bins=edges)
    return (edges[:-1] + BIN_SECONDS / 2) - start, counts / BIN_SECONDS


def plot(path: Path, title: str, items: Sequence[Timing], spans: Sequence[Span], origin: float) -> None:
    """Throughput (accepted and finished per second) and latency over time; spans shaded and
    numbered, their names under the time axis."""
    ended = [t.ended_at for t in items if t.ended_at is not None]
    end = max([*ended, *(t.accepted_at for t in items), *(span.end for span in spans), origin + 1])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, constrained_layout=True)
    x, accepted = _per_second([t.accepted_at for t in items], origin, end)
    top.step(x, accepted, where="mid", label="accepted uploads/s", color="tab:blue")
    x, finished = _per_second(ended, origin, end)
    top.step(x, finished, where="mid", label="finished images/s (done or failed)", color="tab:green")
    top.set_ylabel(f"per second ({BIN_SECONDS:g} s bins)")
    top.legend(loc="upper right")
    top.set_title(title, pad=14)

    done = [t for t in items if t.status == "done" and t.ended_at is not None]
    series = (
        (done, "latency_ms", "tab:purple", "o", "accepted → done"),
        (done, "overhead_ms", "tab:orange", "o", "accepted → done minus the model's own time"),
        ([t for t in items if t.status == "failed" and t.ended_at is not None], "latency_ms", "tab:red", "x", "failed"),
    )
    for chosen, attribute, color, marker, label in series:
        if chosen:
            bottom.scatter(
                [(t.ended_at or 0.0) - origin for t in chosen],
                [max(1.0, getattr(t, attribute) or 0.0) for t in chosen],
                s=6 if marker == "o" else 20,
                marker=marker,
                color=color,
                label=label,
            )
    bottom.set_yscale("log")
    bottom.set_ylabel("ms, at the time the upload ended")
    bottom.legend(loc="lower right", fontsize="small")
    for axis in (top, bottom):
        for span in spans:
            axis.axvspan(span.start - origin, max(span.end, span.start + 0.5) - origin, color=span.color, alpha=0.15)
    for number, span in enumerate(spans, start=1):
        top.annotate(
            str(number),
            xy=(span.start - origin, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize="small",
            color=span.color,
        )
    names = "   ".join(f"{number} {span.label}" for number, span in enumerate(spans, start=1))
    bottom.set_xlabel("seconds since the load started" + (f"\n{textwrap.fill(names, 140)}" if names else ""))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def chaos_title(headline: str, workers: int) -> str:
    return f"make chaos: {headline} ({workers} inference workers, classical backend)"


def read_timings(path: Path) -> list[Timing]:
    return [Timing(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def replot(results: Path) -> Path:
    """Draw a run's timeline.png again from its timings and report (a chaos or a load run)."""
    report = json.loads((results / "report.json").read_text())
    if report["kind"] == "chaos":
        items = read_timings(results / "timings.jsonl")
        spans = [Span(fault["label"], fault["started"], fault["ended"]) for fault in report["faults"]]
        title = chaos_title(report["report"]["headline"], report["options"]["workers"])
        origin = float(report["started"])
    else:
        items = [timing for path in sorted(results.glob("timings-*.jsonl")) for timing in read_timings(path)]
        spans = [Span(p["phase"], p["started"], p["ended"], p["color"]) for p in report["phases"]]
        title = LOAD_TITLE
        origin = float(report["started"])
    plot(results / "timeline.png", title, items, spans, origin)
    return results / "timeline.png"


if __name__ == "__main__":
    print(replot(Path(sys.argv[1])))
