"""`make models` against a local HTTP server (http.server on 127.0.0.1, with Range support) that
serves files the test writes: files and a zipped pack put in place, a wrong checksum refused, a
truncated download resumed, an unreachable server stopping the run at once. Connections
anywhere but the loopback fail the test."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inference_service.download_models import OFFICIAL, PACK_STAMP, DownloadSettings, run

REAL_CONNECT = socket.socket.connect


def loopback_connect(sock: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise AssertionError(f"the test tried to connect to {address}")
    REAL_CONNECT(sock, address)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", loopback_connect)


@dataclass
class Served:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    truncate_once: set[str] = field(default_factory=set)  # send half, then close the connection
    ignore_range: set[str] = field(default_factory=set)  # answer a Range request with the whole file
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


@pytest.fixture
def served() -> Iterator[Served]:
    state = Served(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            asked = self.headers.get("Range")
            state.requests.append((name, asked))
            body = state.files.get(name)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            if asked and name not in state.ignore_range:
                start = int(asked.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if name in state.truncate_once:
                state.truncate_once.discard(name)
                self.wfile.write(body[start : start + (len(body) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body[start:])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def weights_bytes(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def pack_zip(folder: str | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, content in {"det_10g.onnx": b"detector", "w600k_r50.onnx": b"recogniser", **(extra or {})}.items():
            bundle.writestr(f"{folder}/{name}" if folder else name, content)
    return buffer.getvalue()


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def pack_entry(pack: bytes) -> dict[str, Any]:
    return {
        "name": "buffalo_l",
        "url": "buffalo_l.zip",
        "sha256": sha(pack),
        "path": "models/buffalo_l",
        "unpack": "zip",
    }


def manifest(tmp_path: Path, served: Served, entries: list[dict[str, Any]]) -> DownloadSettings:
    path = tmp_path / "downloads.json"
    path.write_text(json.dumps([{**entry, "url": f"{served.url}/{entry['url']}"} for entry in entries]))
    return DownloadSettings(
        model_dir=str(tmp_path / "models"),
        models_download_manifest=str(path),
        models_connect_timeout_seconds=1.0,
        models_read_timeout_seconds=10.0,
    )


def run_capturing(settings: DownloadSettings, names: list[str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    status = run(settings, names or [], out)
    return status, out.getvalue()


def test_good_files_are_verified_put_in_place_and_kept_on_the_next_run(tmp_path: Path, served: Served) -> None:
    weights, pack = weights_bytes(3_000_000, seed=1), pack_zip()
    served.files = {"GFPGANv1.4.pth": weights, "buffalo_l.zip": pack}
    settings = manifest(
        tmp_path,
        served,
        [
            {"name": "GFPGANv1.4.pth", "url": "GFPGANv1.4.pth", "sha256": sha(weights), "path": "GFPGANv1.4.pth"},
            pack_entry(pack),
        ],
    )
    model_dir = Path(settings.model_dir)

    status, output = run_capturing(settings)

    assert status == 0, output
    assert (model_dir / "GFPGANv1.4.pth").read_bytes() == weights
    pack_dir = model_dir / "models" / "buffalo_l"
    assert (pack_dir / "det_10g.onnx").read_bytes() == b"detector"
    assert (pack_dir / "w600k_r50.onnx").read_bytes() == b"recogniser"
    assert (pack_dir / PACK_STAMP).read_text().strip() == sha(pack)
    leftovers = [p.name for p in model_dir.rglob("*") if p.name.endswith((".part", ".unpacking", ".replaced"))]
    assert leftovers == []
    assert "GFPGANv1.4.pth: downloaded" in output and "buffalo_l: downloaded" in output

    asked = len(served.requests)
    status, output = run_capturing(settings)
    assert status == 0 and len(served.requests) == asked  # nothing fetched again
    assert "GFPGANv1.4.pth: kept" in output and "buffalo_l: kept" in output


def test_a_file_with_the_wrong_checksum_is_refused_and_never_put_in_place(tmp_path: Path, served: Served) -> None:
    served.files = {"codeformer.pth": weights_bytes(500_000, seed=2)}
    pinned = sha(b"the file that was released")
    settings = manifest(
        tmp_path,
        served,
        [{"name": "codeformer.pth", "url": "codeformer.pth", "sha256": pinned, "path": "codeformer.pth"}],
    )

    status, output = run_capturing(settings)

    assert status == 1
    assert f"codeformer.pth: sha256 mismatch for {served.url}/codeformer.pth" in output
    assert pinned in output and sha(served.files["codeformer.pth"]) in output
    assert list(Path(settings.model_dir).iterdir()) == []  # neither the file nor its .part


def test_a_file_in_place_with_other_content_is_replaced_by_the_pinned_one(tmp_path: Path, served: Served) -> None:
    weights = weights_bytes(200_000, seed=3)
    served.files = {"codeformer.pth": weights}
    settings = manifest(
        tmp_path,
        served,
        [{"name": "codeformer.pth", "url": "codeformer.pth", "sha256": sha(weights), "path": "codeformer.pth"}],
    )
    destination = Path(settings.model_dir) / "codeformer.pth"
    destination.parent.mkdir(parents=True)
    destination.write_bytes(b"an older or damaged copy")

    status, output = run_capturing(settings)

    assert status == 0, output
    assert destination.read_bytes() == weights


def test_a_truncated_download_is_kept_and_resumed_with_a_range_request(tmp_path: Path, served: Served) -> None:
    weights = weights_bytes(4_000_000, seed=4)
    served.files = {"GFPGANv1.4.pth": weights}
    served.truncate_once = {"GFPGANv1.4.pth"}
    settings = manifest(
        tmp_path,
        served,
        [{"name": "GFPGANv1.4.pth", "url": "GFPGANv1.4.pth", "sha256": sha(weights), "path": "GFPGANv1.4.pth"}],
    )
    model_dir = Path(settings.model_dir)

    status, output = run_capturing(settings)

    assert status == 1
    assert "GFPGANv1.4.pth: the download was interrupted after 2.0 MB" in output and "resume" in output
    assert not (model_dir / "GFPGANv1.4.pth").exists()
    part = model_dir / ".GFPGANv1.4.pth.part"
    assert part.read_bytes() == weights[: len(weights) // 2]

    status, output = run_capturing(settings)

    assert status == 0, output
    assert served.requests[-1] == ("GFPGANv1.4.pth", f"bytes={len(weights) // 2}-")
    assert "resuming at 2.0 MB" in output
    assert (model_dir / "GFPGANv1.4.pth").read_bytes() == weights
    assert not part.exists()


def test_a_server_that_ignores_the_range_gives_the_whole_file_again(tmp_path: Path, served: Served) -> None:
    weights = weights_bytes(1_000_000, seed=5)
    served.files = {"GFPGANv1.4.pth": weights}
    served.truncate_once = {"GFPGANv1.4.pth"}
    served.ignore_range = {"GFPGANv1.4.pth"}
    settings = manifest(
        tmp_path,
        served,
        [{"name": "GFPGANv1.4.pth", "url": "GFPGANv1.4.pth", "sha256": sha(weights), "path": "GFPGANv1.4.pth"}],
    )
    assert run_capturing(settings)[0] == 1

    status, output = run_capturing(settings)

    assert status == 0, output
    assert (Path(settings.model_dir) / "GFPGANv1.4.pth").read_bytes() == weights


def test_a_stale_partial_file_that_does_not_match_is_downloaded_again_in_full(tmp_path: Path, served: Served) -> None:
    weights = weights_bytes(1_000_000, seed=6)
    served.files = {"codeformer.pth": weights}
    settings = manifest(
        tmp_path,
        served,
        [{"name": "codeformer.pth", "url": "codeformer.pth", "sha256": sha(weights), "path": "codeformer.pth"}],
    )
    model_dir = Path(settings.model_dir)
    model_dir.mkdir()
    (model_dir / ".codeformer.pth.part").write_bytes(b"x" * 1000)  # left by a download of another file

    status, output = run_capturing(settings)

    assert status == 0, output
    assert "downloading it again in full" in output
    assert (model_dir / "codeformer.pth").read_bytes() == weights


def test_an_unreachable_server_stops_the_run_at_once_with_a_clear_message(tmp_path: Path, served: Served) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connections are refused
    settings = manifest(
        tmp_path,
        served,
        [
            {"name": "GFPGANv1.4.pth", "url": "GFPGANv1.4.pth", "sha256": "1" * 64, "path": "GFPGANv1.4.pth"},
            {"name": "codeformer.pth", "url": "codeformer.pth", "sha256": "2" * 64, "path": "codeformer.pth"},
        ],
    )
    settings.models_base_url = f"http://127.0.0.1:{port}"
    model_dir = Path(settings.model_dir)
    model_dir.mkdir()
    (model_dir / "GFPGANv1.3.pth").write_bytes(b"weights that were here before")

    started = time.monotonic()
    status, output = run_capturing(settings)

    assert status == 2 and time.monotonic() - started < 5
    assert output.startswith(f"offline: cannot reach 127.0.0.1:{port}")
    assert "classical restorer and dlib" in output and "resume" in output
    assert "codeformer.pth" not in output  # nothing more was tried
    assert [p.name for p in model_dir.iterdir()] == ["GFPGANv1.3.pth"]


def test_a_server_that_never_accepts_is_given_up_after_the_connect_timeout(tmp_path: Path, served: Served) -> None:
    """A listening socket whose backlog is full drops new connection attempts, as a host that
    does not answer does: the connect timeout, not the read timeout, ends the wait."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    try:
        settings = manifest(
            tmp_path,
            served,
            [{"name": "codeformer.pth", "url": "codeformer.pth", "sha256": "3" * 64, "path": "codeformer.pth"}],
        )
        settings.models_base_url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        status, output = run_capturing(settings)
        elapsed = time.monotonic() - started
    finally:
        for sock in [*fillers, listener]:
            sock.close()
    assert status == 2 and output.startswith(f"offline: cannot reach 127.0.0.1:{port}")
    assert 0.9 < elapsed < 5  # MODELS_CONNECT_TIMEOUT_SECONDS=1, far below the 10 s read timeout


def test_the_official_list_can_be_pointed_at_another_server_and_is_still_checked(
    tmp_path: Path, served: Served
) -> None:
    """MODELS_BASE_URL with the built-in list: the release file names on a mirror, verified
    against the official pins (which a file the test made cannot match)."""
    served.files = {"GFPGANv1.4.pth": b"not the released weights"}
    settings = DownloadSettings(model_dir=str(tmp_path / "models"), models_base_url=served.url + "/")

    status, output = run_capturing(settings, ["GFPGANv1.4.pth"])

    official = next(item for item in OFFICIAL if item.name == "GFPGANv1.4.pth")
    assert status == 1
    assert f"sha256 mismatch for {served.url}/GFPGANv1.4.pth: pinned {official.sha256}" in output
    assert served.requests == [("GFPGANv1.4.pth", None)]


def test_the_official_list_names_the_three_release_files_with_pins() -> None:
    defaults = {item.name: item for item in OFFICIAL if item.default}
    assert set(defaults) == {"GFPGANv1.4.pth", "codeformer.pth", "buffalo_l"}
    assert defaults["buffalo_l"].path == "models/buffalo_l" and defaults["buffalo_l"].unpack == "zip"
    assert all(item.url.startswith("https://github.com/") for item in OFFICIAL)
    assert len({item.sha256 for item in OFFICIAL}) == len(OFFICIAL)


def test_a_pack_zipped_with_its_folder_unpacks_the_same(tmp_path: Path, served: Served) -> None:
    pack = pack_zip(folder="buffalo_l")
    served.files = {"buffalo_l.zip": pack}
    settings = manifest(
        tmp_path,
        served,
        [pack_entry(pack)],
    )
    pack_dir = Path(settings.model_dir) / "models" / "buffalo_l"
    pack_dir.mkdir(parents=True)
    (pack_dir / "stale.onnx").write_bytes(b"from an older pack")

    assert run_capturing(settings)[0] == 0
    assert sorted(p.name for p in pack_dir.iterdir()) == [PACK_STAMP, "det_10g.onnx", "w600k_r50.onnx"]


def test_an_archive_with_a_path_outside_its_folder_is_refused(tmp_path: Path, served: Served) -> None:
    pack = pack_zip(extra={"../../escaped.onnx": b"!"})
    served.files = {"buffalo_l.zip": pack}
    settings = manifest(
        tmp_path,
        served,
        [pack_entry(pack)],
    )

    status, output = run_capturing(settings)

    assert status == 1 and "unsafe path" in output
    assert not (tmp_path / "escaped.onnx").exists() and not (Path(settings.model_dir) / "models" / "buffalo_l").exists()


def test_a_missing_file_on_the_server_is_named_and_the_rest_still_downloads(tmp_path: Path, served: Served) -> None:
    weights = weights_bytes(100_000, seed=7)
    served.files = {"codeformer.pth": weights}
    settings = manifest(
        tmp_path,
        served,
        [
            {"name": "GFPGANv1.4.pth", "url": "GFPGANv1.4.pth", "sha256": "4" * 64, "path": "GFPGANv1.4.pth"},
            {"name": "codeformer.pth", "url": "codeformer.pth", "sha256": sha(weights), "path": "codeformer.pth"},
        ],
    )

    status, output = run_capturing(settings)

    assert status == 1 and "GFPGANv1.4.pth" in output and "answered HTTP 404" in output
    assert (Path(settings.model_dir) / "codeformer.pth").read_bytes() == weights


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"sha256": "ABC"}, "64 lower-case hex"),
        ({"path": "../outside.pth"}, "inside MODEL_DIR"),
        ({"unknown_field": 1}, "cannot be used"),
    ],
)
def test_a_bad_manifest_is_refused_before_anything_is_fetched(
    tmp_path: Path, served: Served, entry: dict[str, Any], complaint: str
) -> None:
    base = {"name": "x.pth", "url": "x.pth", "sha256": "5" * 64, "path": "x.pth"}
    settings = manifest(tmp_path, served, [{**base, **entry}])

    status, output = run_capturing(settings)

    assert status == 1 and complaint in output and served.requests == []


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    status, output = run_capturing(DownloadSettings(model_dir=str(tmp_path)), ["GFPGANv9.pth"])
    assert status == 1 and "unknown download GFPGANv9.pth" in output
