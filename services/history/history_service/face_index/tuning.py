"""Every engine parameter of the face index, in one place: both adapters read them from an
EngineTuning (DEFAULT_TUNING unless one is passed in), and benchmarks/search.py passes its own
to measure another setting.

The defaults follow what was measured on this kind of machine (2 cores) on 200,000 512-d
clustered face vectors: HNSW m 16 / ef_construct 100 / ef 128 gives recall@10 ~0.95 unfiltered
and ~0.995 per user. Payload indexes add HNSW links for their field by default, which tripled
the build time for nothing; only the user id (every user-scoped query filters on it) may have
them (`user_id_hnsw`), the other fields are filtered through their payload index alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Quantization = Literal["none", "int8"]


@dataclass(frozen=True)
class EngineTuning:
    # HNSW graph: links per node, and the candidate list while building.
    m: int = 16
    ef_construct: int = 100
    # Links per node in the extra graphs built for payload-indexed fields (None: m).
    payload_m: int | None = None
    # Below this many kilobytes of vectors matching a filter, search scans them exactly
    # through the payload index instead of walking the graph (both adapters also scan when a
    # filtered walk comes back short: scan_after_short_walk).
    full_scan_threshold_kb: int = 10_000
    # Candidate list while searching: higher is more accurate and slower.
    hnsw_ef: int = 512
    # Scalar int8 quantization (4x less memory for the searched copy); rescored with the
    # original vectors over oversampling x top_k candidates.
    quantization: Quantization = "int8"
    quantization_oversampling: float = 4.0
    # Whether the user id's payload index builds its own HNSW links (fast, accurate per-user
    # search at the price of build time); `user_id_is_tenant` also stores each user's points
    # together (Qdrant's multitenancy layout).
    user_id_hnsw: bool = True
    user_id_is_tenant: bool = True
    # Segments smaller than this (KB of vectors) are searched exactly and not indexed;
    # None: the engine's default.
    indexing_threshold_kb: int | None = None
    max_segment_size_kb: int | None = None
    # Embedded engine only. Qdrant Edge has no background optimizer, and its optimize() holds
    # the interpreter lock while it runs, pausing the whole service (20,000 512-d faces: ~54 s
    # on this 2-core machine). New faces stay in the appendable segment, searched exactly
    # (per user ~0.1 ms; unfiltered ~2 ms per 10,000 512-d faces), until this many wait -
    # where an unfiltered exact search nears 20 ms - and then one optimize() runs once no
    # search or write came for `optimize_quiet_seconds` (checked every
    # `optimize_check_seconds`). The reindex CLI optimizes at its end.
    optimize_unindexed_points: int = 100_000
    optimize_quiet_seconds: float = 60.0
    optimize_check_seconds: float = 30.0
    # Points per engine write (bounds how long one call holds the interpreter lock).
    upsert_batch: int = 256

    def full_scan_points(self, dimension: int) -> int:
        """The full-scan threshold in vectors (the engine counts KB of float32 vectors)."""
        return self.full_scan_threshold_kb * 1024 // (4 * dimension)

    def scan_after_short_walk(self, found: int, expected: int, dimension: int) -> bool:
        """Whether a filtered graph search that found `found` faces, fewer than asked, should be
        asked again as an exact scan: the engine's estimate says more match (`expected`), and
        few enough to scan. Where a filter's cheap bounds are inconclusive (a heavy user + a
        date range + a tag) Qdrant chooses between its graph and an exact scan from a sample of
        1,000 points with a fixed seed and stops at its first confident guess: one match among
        the first few samples reads as "thousands match" although a hundred do, and it walks
        the graph, where those few faces have almost no links among them; the walk then stops
        after one or two faces (recall@10 of 0.0, measured). Scanning every such search instead
        costs a heavy user's filter its whole iteration (per-user p95 18.6 -> 25 ms at
        1,000,000 faces), so only the short answers are asked again. Both adapters take the
        estimate from the payload indexes (the product of the conditions' shares, ~0.05 ms)."""
        return found < expected <= self.full_scan_points(dimension)


# Measured at 1,000,000 512-d faces (benchmarks/search.py, README "Similar-face search at scale"):
# int8 with 4x oversampling and ef 512 keeps recall@10 at 0.98 unfiltered and 1.0 per user,
# p95 4.4 ms and 16.7 ms; the user id as tenant keeps each user's faces together on disk.
DEFAULT_TUNING = EngineTuning()
