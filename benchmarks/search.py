"""Similar-face search on this machine: the face index's build time, memory, latency and recall@10.

    .venv/bin/python benchmarks/search.py [--vectors N] [--queries N] [--dim D] [--seed S]
                                          [--tuning NAME=VALUE ...] [--index-dir DIR] [--out PATH]

It builds the history service's embedded face index (EdgeFaceIndex: Qdrant Edge in-process)
through the production adapter, from a synthetic corpus clustered like real identities: ~10
photos per identity (Poisson), every photo a noisy copy of its identity (see generate());
payloads as the service stores them (user id Zipf-like over 2,000 users, created_at over two
years, one of 50 locations, 0-3 of 30 tags, the model id). Then a fresh process reopens the
index from disk (its open time and peak RSS are what serving costs) and runs, one at a time,
queries that are new noisy photos of stored identities:

- per_user: the identity's owner + a date range of +-90 days + one tag (a user's search with
  filters), around one of the identity's tagged photos so that something matches;
- unfiltered: every user's faces (an admin's scope=all);
- user_only: the identity's owner and nothing else (reported beside the issue's two).

Recall@10 is against exact search with numpy over the rows that pass the same filter. The goal
(issue 8) is p95 <= 20 ms and recall@10 >= 0.95. --tuning overrides fields of
history_service.face_index.tuning.EngineTuning (e.g. --tuning hnsw_ef=256) to measure another
setting than the service's. Results go to benchmarks/results/search.json and a table."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from history_service.face_index.base import IndexedFace, SearchFilters
from history_service.face_index.edge import EdgeFaceIndex
from history_service.face_index.tuning import DEFAULT_TUNING, EngineTuning

DAY_MS = 86_400_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
SPAN_MS = 730 * DAY_MS
USERS = 2_000
LOCATIONS = 50
TAGS = 30
SPECTRUM_DECAY = 0.42
PHOTOS_PER_IDENTITY = 10
MODEL = "bench-arcface"
COLLECTION = "bench"
TOP_K = 10
WINDOW_MS = 90 * DAY_MS
GOAL_P95_MS = 20.0
GOAL_RECALL = 0.95
UPSERT_CHUNK = 2_048
# Issue 8's two queries, and a user's search without filters (the user id alone: the case where a
# heavy user's faces are too many to scan and the graph is searched with a selective filter).
KINDS = ("per_user", "unfiltered", "user_only")


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


@dataclass
class Corpus:
    vectors: np.ndarray  # (n, dim) float32, unit rows
    identity: np.ndarray  # (n,) which identity each photo shows
    user: np.ndarray  # (n,) owner
    created_at: np.ndarray  # (n,) epoch ms
    location: np.ndarray  # (n,)
    tags: np.ndarray  # (n,) bit mask over TAGS
    centres: np.ndarray  # (identities, dim)


def generate(count: int, dim: int, seed: int) -> Corpus:
    """Identity centres are Gaussian with a decaying spectrum (the variance of dimension i falls as
    i^-2*SPECTRUM_DECAY), as real embeddings concentrate on fewer directions than they have: two
    strangers' photos then score ~N(0, 0.09) (a threshold of ~0.33 gives a false match rate of
    ~1e-4, as for ArcFace-class models) and a look-alike is graded, not a plateau. A photo is its
    identity's centre plus isotropic noise (cosine 0.74-0.92 to it): photos of one person score
    0.6-0.8 together."""
    rng = np.random.default_rng(seed)
    identities = max(1, count // PHOTOS_PER_IDENTITY)
    spectrum = np.arange(1, dim + 1, dtype=np.float32) ** -SPECTRUM_DECAY
    centres = _unit(rng.standard_normal((identities, dim), dtype=np.float32) * spectrum)
    zipf = 1.0 / np.arange(1, USERS + 1)
    owner = rng.choice(USERS, identities, p=zipf / zipf.sum()).astype(np.int32)
    identity = rng.integers(0, identities, count).astype(np.int32)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        shown = identity[start : start + 100_000]
        quality = rng.uniform(0.55, 0.85, (len(shown), 1)).astype(np.float32)
        noise = _unit(rng.standard_normal((len(shown), dim), dtype=np.float32))
        vectors[start : start + len(shown)] = _unit(np.sqrt(quality) * centres[shown] + np.sqrt(1 - quality) * noise)
    tag_count = rng.integers(0, 4, count)
    tags = np.zeros(count, dtype=np.int32)
    for nth in range(1, 4):
        rows = np.nonzero(tag_count >= nth)[0]
        tags[rows] |= np.left_shift(1, rng.integers(0, TAGS, len(rows))).astype(np.int32)
    return Corpus(
        vectors=vectors,
        identity=identity,
        user=owner[identity],
        created_at=START_MS + rng.integers(0, SPAN_MS, count),
        location=rng.integers(0, LOCATIONS, count).astype(np.int16),
        tags=tags,
        centres=centres.astype(np.float32),
    )


def user_name(user: int) -> str:
    return f"user-{user:04d}"


def tag_name(tag: int) -> str:
    return f"tag-{tag:02d}"


def image_name(row: int) -> str:
    return f"img-{row:08d}"


def faces(corpus: Corpus, start: int, stop: int) -> list[IndexedFace]:
    vectors = corpus.vectors[start:stop].tolist()
    return [
        IndexedFace(
            image_id=image_name(row),
            face_index=0,
            user_id=user_name(int(corpus.user[row])),
            model=MODEL,
            vector=vectors[row - start],
            created_at_ms=int(corpus.created_at[row]),
            location=f"location-{int(corpus.location[row]):02d}",
            tags=tuple(tag_name(tag) for tag in range(TAGS) if int(corpus.tags[row]) >> tag & 1),
            box=(0, 0, 112, 112),
        )
        for row in range(start, stop)
    ]


@dataclass
class Queries:
    kind: str
    vectors: np.ndarray  # (q, dim)
    user: np.ndarray  # -1: every user
    date_from: np.ndarray
    date_to: np.ndarray
    tag: np.ndarray  # -1: any


def make_queries(corpus: Corpus, count: int, seed: int, kind: str) -> Queries:
    """Fresh photos of stored identities, noisier than the stored ones (cosine 0.63-0.89)."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    shown = np.unique(corpus.identity)
    vectors: list[np.ndarray] = []
    users: list[int] = []
    froms: list[int] = []
    tos: list[int] = []
    tags: list[int] = []
    while len(vectors) < count:
        identity = int(rng.choice(shown))
        quality = rng.uniform(0.4, 0.8)
        noise = _unit(rng.standard_normal((corpus.vectors.shape[1],), dtype=np.float32))
        vector = _unit(np.sqrt(quality) * corpus.centres[identity] + np.sqrt(1 - quality) * noise)
        if kind == "unfiltered":
            users.append(-1)
            froms.append(0)
            tos.append(0)
            tags.append(-1)
        else:
            tagged = np.nonzero((corpus.identity == identity) & (corpus.tags != 0))[0]
            if len(tagged) == 0:
                continue
            row = int(rng.choice(tagged))
            users.append(int(corpus.user[row]))
            froms.append(int(corpus.created_at[row]) - WINDOW_MS)
            tos.append(int(corpus.created_at[row]) + WINDOW_MS)
            tags.append(int(rng.choice([tag for tag in range(TAGS) if int(corpus.tags[row]) >> tag & 1])))
            if kind == "user_only":
                tags[-1] = -1
        vectors.append(np.asarray(vector, dtype=np.float32))
    return Queries(kind, np.stack(vectors), np.array(users), np.array(froms), np.array(tos), np.array(tags))


class ExactSearch:
    """The reference: numpy over every row that passes the query's filter."""

    def __init__(self, corpus: Corpus) -> None:
        self._corpus = corpus
        order = np.argsort(corpus.user, kind="stable")
        bounds = np.searchsorted(corpus.user[order], np.arange(USERS + 1))
        self._rows_of_user = [order[bounds[user] : bounds[user + 1]] for user in range(USERS)]

    def passing(self, queries: Queries, nth: int) -> np.ndarray:
        c = self._corpus
        rows = self._rows_of_user[queries.user[nth]]
        if queries.tag[nth] < 0:
            return rows
        keep = (
            (c.created_at[rows] >= queries.date_from[nth])
            & (c.created_at[rows] <= queries.date_to[nth])
            & (c.tags[rows] >> queries.tag[nth] & 1 == 1)
        )
        return rows[keep]

    def top(self, queries: Queries) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per query: the exact top-k rows, their scores, and how many rows passed the filter."""
        if queries.kind == "unfiltered":
            return self._top_everywhere(queries.vectors)
        out = []
        for nth in range(len(queries.vectors)):
            rows = self.passing(queries, nth)
            scores = self._corpus.vectors[rows] @ queries.vectors[nth]
            best = np.argsort(-scores, kind="stable")[:TOP_K]
            out.append((rows[best], scores[best], len(rows)))
        return out

    def _top_everywhere(self, vectors: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
        count = len(self._corpus.vectors)
        best_rows = np.zeros((len(vectors), 0), dtype=np.int64)
        best_scores = np.zeros((len(vectors), 0), dtype=np.float32)
        for start in range(0, count, 100_000):
            scores = (self._corpus.vectors[start : start + 100_000] @ vectors.T).T
            part = np.argpartition(-scores, min(TOP_K, scores.shape[1] - 1), axis=1)[:, :TOP_K]
            best_rows = np.concatenate([best_rows, part + start], axis=1)
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
            keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :TOP_K]
            best_rows = np.take_along_axis(best_rows, keep, 1)
            best_scores = np.take_along_axis(best_scores, keep, 1)
        return [(best_rows[nth], best_scores[nth], count) for nth in range(len(vectors))]


def recall_at_k(found: list[int], exact_rows: np.ndarray, exact_scores: np.ndarray, scores_found: np.ndarray) -> float:
    """Share of the exact top-k found; a row scoring as high as the exact k-th (a tie) counts."""
    if len(exact_rows) == 0:
        return 1.0
    exact = set(exact_rows.tolist())
    floor = float(exact_scores[-1]) - 1e-5
    hits = sum(1 for row, score in zip(found, scores_found, strict=True) if row in exact or score >= floor)
    return min(hits, len(exact_rows)) / len(exact_rows)


def peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec, so a
    child started from the 12 GB build process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_parts_mb() -> dict[str, int]:
    """The process's resident memory now: anonymous (heap) and file-backed (mapped index files,
    which the kernel can drop and read again)."""
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            parts[name] = round(int(value.split()[0]) / 1024)
    return parts


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def parse_tuning(pairs: list[str]) -> EngineTuning:
    """NAME=VALUE pairs as EngineTuning fields, converted to the field's type (`none` is None
    where the field is optional)."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(EngineTuning)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in fields:
            raise SystemExit(f"--tuning {name}: not a field of EngineTuning ({', '.join(fields)})")
        kind = fields[name]
        if text.lower() == "none" and "None" in kind:
            changes[name] = None
        elif kind.startswith("bool"):
            changes[name] = text.lower() in ("1", "true", "yes")
        elif kind.startswith("int"):
            changes[name] = int(text)
        elif kind.startswith("float"):
            changes[name] = float(text)
        else:
            changes[name] = text
    return dataclasses.replace(DEFAULT_TUNING, **changes)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def build(corpus: Corpus, directory: Path, tuning: EngineTuning) -> dict[str, float]:
    """Wall and CPU seconds of each step: CPU time tells the engine's cost on a busy machine."""
    index = EdgeFaceIndex(directory, COLLECTION, tuning, background_optimize=False)
    await index.open()
    wall, cpu = time.perf_counter(), cpu_seconds()
    for start in range(0, len(corpus.vectors), UPSERT_CHUNK):
        await index.upsert(faces(corpus, start, min(start + UPSERT_CHUNK, len(corpus.vectors))))
    inserted_wall, inserted_cpu = time.perf_counter(), cpu_seconds()
    await index.optimize()
    await index.close()
    done_wall, done_cpu = time.perf_counter(), cpu_seconds()
    return {
        "insert_s": inserted_wall - wall,
        "optimize_s": done_wall - inserted_wall,
        "total_s": done_wall - wall,
        "insert_cpu_s": inserted_cpu - cpu,
        "optimize_cpu_s": done_cpu - inserted_cpu,
    }


# -- the serving process: reopens the index and answers the queries, nothing else in memory --


async def ask(index: EdgeFaceIndex, data: Any, kind: str, nth: int) -> tuple[float, float, list[int], list[float]]:
    """One query as the search service sends it: its latency and the CPU time the process spent
    on it (ms; on a busy machine the first waits for a core, the second does not), the rows and
    cosines found."""
    user = int(data[f"{kind}_user"][nth])
    filters = SearchFilters()
    if user >= 0 and int(data[f"{kind}_tag"][nth]) >= 0:
        tag = tag_name(int(data[f"{kind}_tag"][nth]))
        filters = SearchFilters(int(data[f"{kind}_from"][nth]), int(data[f"{kind}_to"][nth]), tags=(tag,))
    vector = data[f"{kind}_vectors"][nth].tolist()
    began, began_cpu = time.perf_counter(), time.process_time()
    hits = await index.search(vector, MODEL, TOP_K, filters, user_name(user) if user >= 0 else None)
    elapsed, cpu = (time.perf_counter() - began) * 1000, (time.process_time() - began_cpu) * 1000
    return elapsed, cpu, [int(hit.image_id.removeprefix("img-")) for hit in hits], [hit.cosine for hit in hits]


async def serve(directory: Path, tuning: EngineTuning, query_file: Path, warmup: int) -> dict[str, Any]:
    started = time.perf_counter()
    index = EdgeFaceIndex(directory, COLLECTION, tuning, background_optimize=False)
    await index.open()
    opened = time.perf_counter() - started
    data = np.load(query_file)
    answers: dict[str, Any] = {}
    for kind in KINDS:
        count = len(data[f"{kind}_vectors"])
        for nth in range(min(warmup, count)):
            await ask(index, data, kind, count - 1 - nth)
        latencies, cpu_times, rows, scores = [], [], [], []
        for nth in range(count):
            elapsed, cpu, found, cosines = await ask(index, data, kind, nth)
            latencies.append(elapsed)
            cpu_times.append(cpu)
            rows.append(found)
            scores.append(cosines)
        answers[kind] = {"latency_ms": latencies, "cpu_ms": cpu_times, "rows": rows, "scores": scores}
    await index.close()
    return {"open_s": opened, "peak_rss_mb": peak_rss_mb(), "rss_now_mb": rss_parts_mb(), "answers": answers}


def serve_in_fresh_process(directory: Path, tuning_pairs: list[str], query_file: Path, warmup: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--serve", str(directory), "--query-file", str(query_file)]
    command += ["--warmup", str(warmup), "--tuning", *tuning_pairs] if tuning_pairs else ["--warmup", str(warmup)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603 - our own script
    return json.loads(result.stdout.splitlines()[-1])


def summarise(
    queries: Queries,
    exact: list[tuple[np.ndarray, np.ndarray, int]],
    answer: dict[str, Any],
    checker: ExactSearch,
) -> dict[str, Any]:
    latencies = np.array(answer["latency_ms"])
    recalls, violations = [], 0
    for nth, (exact_rows, exact_scores, _) in enumerate(exact):
        found = answer["rows"][nth]
        recalls.append(recall_at_k(found, exact_rows, exact_scores, np.array(answer["scores"][nth])))
        if queries.kind != "unfiltered":
            violations += len(set(found) - set(checker.passing(queries, nth).tolist()))
    p95 = float(np.percentile(latencies, 95))
    recall = float(np.mean(recalls))
    return {
        "queries": len(latencies),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(p95, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "mean_ms": round(float(latencies.mean()), 2),
        "cpu_ms_p50": round(float(np.percentile(answer["cpu_ms"], 50)), 2),
        "cpu_ms_p95": round(float(np.percentile(answer["cpu_ms"], 95)), 2),
        "recall_at_10": round(recall, 4),
        "min_recall_at_10": round(float(np.min(recalls)), 2),
        "rows_passing_filter_median": int(np.median([passing for _, _, passing in exact])),
        "rows_passing_filter_p95": int(np.percentile([passing for _, _, passing in exact], 95)),
        "results_outside_filter": violations,
        "meets_goal": p95 <= GOAL_P95_MS and recall >= GOAL_RECALL,
    }


def print_table(report: dict[str, Any]) -> None:
    b, s = report["build"], report["serve"]
    print(
        f"face index: qdrant-edge {report['engine_version']}, {report['vectors']:,} x {report['dim']}-d, "
        f"{os.cpu_count()} CPUs, load average at start {report['load_average_at_start']}"
    )
    print(f"tuning: {report['tuning']}")
    print(
        f"build: insert {b['insert_s']:.0f} s + optimize {b['optimize_s']:.0f} s = {b['total_s']:.0f} s "
        f"(CPU {b['insert_cpu_s']:.0f} s + {b['optimize_cpu_s']:.0f} s); "
        f"build process peak RSS {b['peak_rss_mb'] / 1024:.1f} GB (the benchmark's corpus: "
        f"{report['corpus_mb'] / 1024:.1f} GB of it); on disk {report['disk_mb'] / 1024:.2f} GB"
    )
    now = s["rss_after_queries_mb"]
    print(
        f"serve (fresh process): reopen {s['open_s']:.1f} s, peak RSS {s['peak_rss_mb'] / 1024:.2f} GB "
        f"(after the queries: {now.get('RssAnon', 0) / 1024:.2f} GB heap + {now.get('RssFile', 0) / 1024:.2f} GB "
        "mapped index files)"
    )
    print(
        f"{'query':12s} {'p50 ms':>7s} {'p95 ms':>7s} {'p99 ms':>7s} {'CPU p50':>7s} {'CPU p95':>7s} "
        f"{'recall@10':>9s} {'passing':>8s}  goal"
    )
    for kind in KINDS:
        r = report["queries"][kind]
        print(
            f"{kind:12s} {r['p50_ms']:7.2f} {r['p95_ms']:7.2f} {r['p99_ms']:7.2f} {r['cpu_ms_p50']:7.2f} "
            f"{r['cpu_ms_p95']:7.2f} {r['recall_at_10']:9.4f} {r['rows_passing_filter_median']:8d}  "
            f"{'met' if r['meets_goal'] else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500, help="of each kind")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured queries of each kind first")
    parser.add_argument("--tuning", nargs="*", default=[], metavar="NAME=VALUE", help="EngineTuning overrides")
    parser.add_argument("--index-dir", type=Path, default=None, help="build here and keep it (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search.json")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--query-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tuning = parse_tuning(args.tuning)
    if args.serve:
        print(json.dumps(asyncio.run(serve(args.serve, tuning, args.query_file, args.warmup))))
        return

    load_average = round(os.getloadavg()[0], 2)
    began = time.perf_counter()
    corpus = generate(args.vectors, args.dim, args.seed)
    print(f"corpus: {args.vectors:,} x {args.dim}-d in {time.perf_counter() - began:.0f} s", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="search-bench-"))
    directory = args.index_dir or scratch / "index"
    try:
        if directory.exists():
            shutil.rmtree(directory)
        build_figures = asyncio.run(build(corpus, directory, tuning))
        build_figures["peak_rss_mb"] = peak_rss_mb()
        print(f"built in {build_figures['total_s']:.0f} s", flush=True)
        query_sets = {kind: make_queries(corpus, args.queries, args.seed, kind) for kind in KINDS}
        query_file = scratch / "queries.npz"
        np.savez(
            query_file,
            **{
                f"{kind}_{part}": getattr(q, attr)
                for kind, q in query_sets.items()
                for part, attr in (
                    ("vectors", "vectors"),
                    ("user", "user"),
                    ("from", "date_from"),
                    ("to", "date_to"),
                    ("tag", "tag"),
                )
            },
        )
        served = serve_in_fresh_process(directory, args.tuning, query_file, args.warmup)
        checker = ExactSearch(corpus)
        results = {
            kind: summarise(q, checker.top(q), served["answers"][kind], checker) for kind, q in query_sets.items()
        }
        report = {
            "command": " ".join(["benchmarks/search.py", *sys.argv[1:]]),
            "engine": "EdgeFaceIndex (qdrant-edge-py, in-process)",
            "engine_version": importlib.metadata.version("qdrant-edge-py"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "load_average_at_start": load_average,
            "vectors": args.vectors,
            "dim": args.dim,
            "seed": args.seed,
            "tuning": dataclasses.asdict(tuning),
            "build": {key: round(value, 1) for key, value in build_figures.items()},
            "corpus_mb": round(corpus.vectors.nbytes / 2**20),
            "disk_mb": round(disk_mb(directory)),
            "serve": {
                "open_s": round(served["open_s"], 2),
                "peak_rss_mb": round(served["peak_rss_mb"]),
                "rss_after_queries_mb": served["rss_now_mb"],
            },
            "queries": results,
            "goal": {"p95_ms": GOAL_P95_MS, "recall_at_10": GOAL_RECALL},
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
