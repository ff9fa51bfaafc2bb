"""Exports: time and peak memory of the process that makes one, for histories of several sizes.

    .venv/bin/python benchmarks/export.py [--items 100,1000] [--part-size-mib 8] [--out PATH]

For each size it seeds a history into the MongoDB stand-in (nx-27017) and the S3 stand-in
(localbucket), both started here in a temporary folder: items as the history service stores
them (tags, note, location, quality, feedback on every third) and, per item, an original and a
restored JPEG made from t1.jpg (1280 x 886, re-encoded per item so that every file differs,
about 150 KB each). Then a fresh process, the exporting process, runs one export job through the
history service's own classes (ExportWorker -> Exporter -> ArchiveWriter -> BlobStore.put_stream:
zipstream-ng into an S3 multipart upload) and reports its wall time and its peak resident memory
(VmHWM), next to its resident memory just before the export started. The stand-ins run in
their own processes, so their memory is not counted; their speed is part of the time (every file
is read from and the archive written to localbucket over HTTP on this machine)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
USER = "bench-user"
BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


def _status_kib(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, from /proc. Not ru_maxrss:
    Linux carries the peak of the process image that exec replaced (here: the forked copy of the
    seeding process) into it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _photos(count: int) -> Iterator[tuple[bytes, bytes]]:
    """(original, restored) JPEG pairs, all different, one at a time."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None, "insightface (test data) is not installed"
    base = Image.open(Path(spec.origin).parent / "data" / "images" / "t1.jpg").convert("RGB")
    for index in range(count):
        image = base.copy()
        image.putpixel((index % base.width, 0), (index % 256, (index // 256) % 256, 7))
        files = []
        for quality in (85, 90):
            out = io.BytesIO()
            image.save(out, "JPEG", quality=quality)
            files.append(out.getvalue())
        yield files[0], files[1]


async def _seed(mongo_url: str, s3_endpoint: str, database_name: str, bucket: str, items: int) -> int:
    from facerestore_common import mongo
    from facerestore_common.settings import StorageSettings
    from facerestore_common.storage import BlobStore
    from history_service.library import search_words

    database = mongo.connect(mongo_url, database_name)
    blobs = BlobStore(StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=bucket))
    await blobs.ensure_bucket()
    stored = 0
    documents = []
    for index, (original, restored) in enumerate(_photos(items)):
        image_id = f"img{index:06d}"
        created = BASE_MS + index * 60_000
        keys = {"original_key": f"originals/{image_id}.jpg", "restored_key": f"restored/{image_id}.jpg"}
        await blobs.put(keys["original_key"], original, "image/jpeg")
        await blobs.put(keys["restored_key"], restored, "image/jpeg")
        stored += len(original) + len(restored)
        tags = ["family", f"year{2000 + index % 20}"]
        note = f"Photo {index} from the family album"
        documents.append(
            {
                "_id": image_id,
                "user_id": USER,
                "status": "done",
                "status_rank": 3,
                "deleted": False,
                "created_at_ms": created,
                "updated_at_ms": created + 2_000,
                "sort_key": f"{created:013d}-{image_id}",
                "tags": tags,
                "note": note,
                "location": "Lisbon",
                "search_words": search_words(tags, note),
                "width": 1280,
                "height": 886,
                "faces": 6,
                "quality": {"backend": "classical", "restorer_model": "classical-v2", "sharpness_gain": 1.8},
                "feedback": {"rating": 4, "comment": "good", "given_at_ms": created + 5_000} if index % 3 == 0 else {},
                **keys,
            }
        )
    for start in range(0, len(documents), 500):
        await database["items"].insert_many(documents[start : start + 500])
    database.client.close()
    return stored


async def _export(mongo_url: str, s3_endpoint: str, database_name: str, bucket: str, part_size: int) -> dict[str, Any]:
    """The exporting process: one export job, as the history service's worker runs it."""
    from facerestore_common import mongo
    from facerestore_common.settings import StorageSettings
    from facerestore_common.storage import BlobStore
    from history_service.exports import Exporter, ExportJobs, ExportSettings, ExportSource, ExportWorker, archive_key

    database = mongo.connect(mongo_url, database_name)
    blobs = BlobStore(StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=bucket))
    jobs = ExportJobs(database)
    await jobs.create_indexes()
    settings = ExportSettings(part_size=part_size)
    worker = ExportWorker(jobs, Exporter(jobs, ExportSource(database), blobs, settings), settings, 1, 1.0)
    export = await jobs.create(USER)
    before_kib = _status_kib("VmRSS")
    started = time.perf_counter()
    assert await worker.run_once()
    seconds = time.perf_counter() - started
    done = await jobs.get(export.id)
    assert done is not None and done.status == "done", done
    size = await blobs.size(archive_key(export.id))
    database.client.close()
    return {
        "items": done.items_done,
        "archive_bytes": size,
        "seconds": round(seconds, 2),
        "items_per_second": round(done.items_done / seconds, 1),
        "archive_mib_per_second": round(size / 2**20 / seconds, 1),
        "rss_before_export_mib": round(before_kib / 1024, 1),
        "peak_rss_mib": round(_status_kib("VmHWM") / 1024, 1),
    }


def _run_export_process(
    mongo_url: str, s3_endpoint: str, database_name: str, bucket: str, part_size: int
) -> dict[str, Any]:
    output = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, __file__, "--export-only", mongo_url, s3_endpoint, database_name, bucket, str(part_size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--export-only":
        _, _, mongo_url, s3_endpoint, database_name, bucket, part_size = sys.argv
        print(json.dumps(asyncio.run(_export(mongo_url, s3_endpoint, database_name, bucket, int(part_size)))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="100,1000", help="history sizes, comma-separated")
    parser.add_argument("--part-size-mib", type=int, default=8, help="S3 multipart part size (EXPORT_PART_SIZE_BYTES)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export.json")
    args = parser.parse_args()
    sizes = [int(value) for value in args.items.split(",")]
    part_size = args.part_size_mib * 2**20

    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    mongo_port, s3_port = _free_port(), _free_port()
    (work / "mongo").mkdir()
    (work / "s3").mkdir()
    servers = [
        subprocess.Popen(  # noqa: S603 - the stand-ins installed in the virtualenv
            [
                str(BIN / "nx-27017"),
                "--data-dir",
                str(work / "mongo"),
                "--pid-file",
                str(work / "mongo" / "nx.pid"),
                "--host",
                "127.0.0.1",
                "-p",
                str(mongo_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(  # noqa: S603 - the stand-ins installed in the virtualenv
            [str(BIN / "localbucket"), str(work / "s3"), "--host", "127.0.0.1", "--port", str(s3_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    runs = []
    try:
        _wait_for_port(mongo_port)
        _wait_for_port(s3_port)
        mongo_url, s3_endpoint = f"mongodb://127.0.0.1:{mongo_port}", f"127.0.0.1:{s3_port}"
        for items in sizes:
            database_name, bucket = f"bench{items}", f"bench-{items}"
            seeded = time.perf_counter()
            stored = asyncio.run(_seed(mongo_url, s3_endpoint, database_name, bucket, items))
            print(f"seeded {items} items ({stored / 2**20:.0f} MiB of files) in {time.perf_counter() - seeded:.0f}s")
            result = {
                "history_items": items,
                "files_mib": round(stored / 2**20, 1),
                **_run_export_process(mongo_url, s3_endpoint, database_name, bucket, part_size),
            }
            print(json.dumps(result))
            runs.append(result)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "part_size_mib": args.part_size_mib,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
