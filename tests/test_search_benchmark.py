"""benchmarks/search.py at a size the engine searches exactly: its numpy reference and the face
index it builds through the production adapter must then agree on every query."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "search.py"


def test_small_search_benchmark_matches_exact_search(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    # 3,000 vectors stay below the indexing threshold: every search is an exact scan.
    command = [sys.executable, str(BENCHMARK), "--vectors", "3000", "--queries", "40", "--dim", "64"]
    command += ["--out", str(out), "--index-dir", str(tmp_path / "index"), "--tuning", "quantization=none"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["vectors"] == 3000 and report["dim"] == 64
    assert report["tuning"]["quantization"] == "none"
    assert report["build"]["total_s"] > 0 and report["disk_mb"] > 0
    assert report["serve"]["peak_rss_mb"] > 0
    for kind in ("per_user", "unfiltered", "user_only"):
        figures = report["queries"][kind]
        assert figures["queries"] == 40
        assert figures["recall_at_10"] == 1.0, (kind, figures)
        assert figures["results_outside_filter"] == 0, (kind, figures)
    assert report["queries"]["unfiltered"]["rows_passing_filter_median"] == 3000
    assert report["queries"]["per_user"]["rows_passing_filter_median"] >= 1
    assert "recall@10" in finished.stdout
