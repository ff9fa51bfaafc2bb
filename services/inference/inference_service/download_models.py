"""`make models` (`python -m inference_service.download_models`): put the released model
weights in MODEL_DIR from their official release addresses, each checked against a pinned
SHA-256.

- GFPGANv1.4.pth (TencentARC/GFPGAN), codeformer.pth (sczhou/CodeFormer) and the insightface
  buffalo_l pack (deepinsight/insightface, a zip unpacked to MODEL_DIR/models/buffalo_l).
  GFPGANv1.3.pth is pinned too and fetched when named (`make models ONLY=GFPGANv1.3.pth`).
- A file already in place with its pinned digest is kept. Anything else is downloaded beside its
  destination as `.<name>.part`, hashed, and moved into place (os.replace) only when the digest
  matches: MODEL_DIR never holds a half-written or unverified file under a real name.
- Resumable: an interrupted download leaves its .part, and the next run asks for the rest with
  an HTTP Range request.
- Offline: the first connection that fails (refused, unknown host, or no answer within
  MODELS_CONNECT_TIMEOUT_SECONDS) stops the run at once with a message saying so; MODEL_DIR keeps
  what it had, and the worker's `auto` choices run on what is there (the weight-free classical
  restorer and dlib when nothing is).
- MODELS_BASE_URL fetches every file from another server (a mirror holding the same files under
  their release names); MODELS_DOWNLOAD_MANIFEST replaces the whole list with a JSON file of the
  same fields as Download.

Exit status: 0 when every file is in place, 1 when one could not be (its message names it),
2 when the network could not be reached."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal, TextIO
from urllib.parse import urlsplit

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

CHUNK_BYTES = 1 << 20
PACK_STAMP = ".sha256"  # inside an unpacked archive: the pinned digest of the archive it came from


@dataclass(frozen=True)
class Download:
    name: str  # how it is named on the command line and in messages
    url: str
    sha256: str
    path: str  # inside MODEL_DIR: the file, or the directory an archive unpacks into
    size: int | None = None  # bytes, as published; for the progress line only
    unpack: Literal["zip"] | None = None
    default: bool = True  # fetched when no names are given


# The sha256 sums are not published by the upstream projects; these are the digests of the
# release assets as independently computed and pinned by several unrelated projects, all agreeing.
OFFICIAL: tuple[Download, ...] = (
    Download(
        name="GFPGANv1.4.pth",
        url="https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        path="GFPGANv1.4.pth",
        size=348_632_874,
    ),
    Download(
        name="GFPGANv1.3.pth",
        url="https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
        sha256="c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
        path="GFPGANv1.3.pth",
        size=348_632_874,
        default=False,
    ),
    Download(
        name="codeformer.pth",
        url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        path="codeformer.pth",
        size=376_637_898,
    ),
    Download(
        name="buffalo_l",
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        sha256="80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
        path="models/buffalo_l",
        size=288_621_354,
        unpack="zip",
    ),
)


class DownloadSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    model_dir: str = "var/models"
    # Fetch every file from here instead (base URL + "/" + the release file name).
    models_base_url: str = ""
    # A JSON list of downloads (the fields of Download) in place of the official ones.
    models_download_manifest: str = ""
    models_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    models_read_timeout_seconds: float = Field(default=60.0, gt=0)


class Unreachable(Exception):
    """The network (or the server) cannot be reached: nothing more is tried."""


class DownloadFailed(Exception):
    """This one file could not be put in place; the message says why."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def load_downloads(settings: DownloadSettings) -> list[Download]:
    downloads = list(OFFICIAL)
    if settings.models_download_manifest:
        manifest = Path(settings.models_download_manifest)
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8"))
            downloads = [Download(**entry) for entry in entries]
        except (OSError, ValueError, TypeError) as error:
            raise DownloadFailed(f"MODELS_DOWNLOAD_MANIFEST {manifest} cannot be used: {error}") from error
    for item in downloads:
        if len(item.sha256) != 64 or item.sha256.strip("0123456789abcdef"):
            raise DownloadFailed(f"{item.name}: sha256 must be 64 lower-case hex digits, got {item.sha256!r}")
        path = PurePosixPath(item.path)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise DownloadFailed(f"{item.name}: {item.path} must be a path inside MODEL_DIR")
    if settings.models_base_url:
        base = settings.models_base_url.rstrip("/")
        downloads = [replace(item, url=f"{base}/{item.url.rsplit('/', 1)[-1]}") for item in downloads]
    return downloads


def select(downloads: list[Download], names: list[str]) -> list[Download]:
    if not names:
        return [item for item in downloads if item.default]
    known = {item.name: item for item in downloads}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise DownloadFailed(f"unknown download {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[name] for name in names]


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


class Downloader:
    def __init__(self, model_dir: Path, client: httpx.Client, out: TextIO) -> None:
        self._model_dir = model_dir
        self._client = client
        self._out = out

    def _say(self, message: str) -> None:
        print(message, file=self._out, flush=True)

    def ensure(self, item: Download) -> str:
        """Put item in place; returns "kept" or "downloaded"."""
        destination = self._model_dir / Path(item.path)
        if self._in_place(item, destination):
            return "kept"
        destination.parent.mkdir(parents=True, exist_ok=True)
        release_name = item.url.rsplit("/", 1)[-1] or item.name
        part = destination.parent / f".{release_name}.part"
        resumed = self._fetch(item, part)
        actual = file_sha256(part)
        if actual != item.sha256 and resumed:
            # The bytes kept from before may belong to another file: once more from the start.
            self._say(f"{item.name}: the resumed file does not match its sha256; downloading it again in full")
            part.unlink()
            self._fetch(item, part)
            actual = file_sha256(part)
        if actual != item.sha256:
            part.unlink()
            raise DownloadFailed(f"{item.name}: sha256 mismatch for {item.url}: pinned {item.sha256}, got {actual}")
        if item.unpack == "zip":
            self._unpack_zip(item, part, destination)
            part.unlink()
        else:
            os.replace(part, destination)
        return "downloaded"

    @staticmethod
    def _in_place(item: Download, destination: Path) -> bool:
        if item.unpack == "zip":
            stamp = destination / PACK_STAMP
            return stamp.is_file() and stamp.read_text(encoding="ascii").strip() == item.sha256
        return destination.is_file() and file_sha256(destination) == item.sha256

    def _fetch(self, item: Download, part: Path) -> bool:
        """Download item.url into part, continuing what part holds; True when it was resumed."""
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with self._client.stream("GET", item.url, headers=headers) as response:
                if response.status_code == 416 and have:  # nothing past what is here: check it
                    return True
                if response.status_code == 206 and have and self._continues_at(response, have):
                    mode, resumed = "ab", True
                    self._say(f"{item.name}: resuming at {_megabytes(have)}")
                elif response.status_code in (200, 206):
                    mode, resumed, have = "wb", False, 0
                else:
                    raise DownloadFailed(f"{item.name}: {item.url} answered HTTP {response.status_code}")
                total = f" of {_megabytes(item.size)}" if item.size else ""
                self._say(f"{item.name}: downloading from {item.url}{total}")
                with part.open(mode) as stream:
                    for chunk in response.iter_bytes():  # as it arrives: an interruption loses nothing
                        stream.write(chunk)
                        have += len(chunk)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            host = urlsplit(item.url).netloc
            raise Unreachable(f"cannot reach {host} ({error or type(error).__name__})") from error
        except httpx.TransportError as error:  # the connection broke or stalled mid-download
            kept = part.stat().st_size if part.exists() else 0
            raise DownloadFailed(
                f"{item.name}: the download was interrupted after {_megabytes(kept)} "
                f"({error or type(error).__name__}); run `make models` again to resume it"
            ) from error
        return resumed

    @staticmethod
    def _continues_at(response: httpx.Response, offset: int) -> bool:
        """Whether a 206 answer's Content-Range starts where the partial file ends."""
        content_range = response.headers.get("content-range", "")
        unit, _, rest = content_range.partition(" ")
        return unit == "bytes" and rest.split("-", 1)[0].strip() == str(offset)

    def _unpack_zip(self, item: Download, archive: Path, destination: Path) -> None:
        """Unpack into a fresh directory beside destination, then swap it into place."""
        staging = destination.parent / f".{destination.name}.unpacking"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with zipfile.ZipFile(archive) as bundle:
                members = [info for info in bundle.infolist() if not info.is_dir()]
                names = [PurePosixPath(info.filename) for info in members]
                for name in names:
                    if name.is_absolute() or ".." in name.parts:
                        raise DownloadFailed(f"{item.name}: the archive holds an unsafe path {name}")
                # A pack zipped with its folder (buffalo_l/x.onnx) unpacks like one without.
                strip = all(len(n.parts) > 1 and n.parts[0] == destination.name for n in names)
                for info, name in zip(members, names, strict=True):
                    target = staging.joinpath(*(name.parts[1:] if strip else name.parts))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(info) as source, target.open("wb") as sink:
                        shutil.copyfileobj(source, sink, CHUNK_BYTES)
        except zipfile.BadZipFile as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise DownloadFailed(f"{item.name}: {item.url} is not a readable zip archive: {error}") from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (staging / PACK_STAMP).write_text(item.sha256 + "\n", encoding="ascii")
        retired = destination.parent / f".{destination.name}.replaced"
        shutil.rmtree(retired, ignore_errors=True)
        if destination.exists():
            os.replace(destination, retired)
        os.replace(staging, destination)
        shutil.rmtree(retired, ignore_errors=True)


OFFLINE_ADVICE = (
    "Nothing more is downloaded. MODEL_DIR keeps what it has, and the platform keeps running: with "
    "RESTORER=auto and FACE_ANALYZER=auto the worker uses the weights that are there and otherwise the "
    "weight-free classical restorer and dlib. Run `make models` again when the network is back; "
    "interrupted downloads resume where they stopped."
)


def run(settings: DownloadSettings, names: list[str], out: TextIO) -> int:
    model_dir = Path(settings.model_dir)
    try:
        chosen = select(load_downloads(settings), names)
    except DownloadFailed as error:
        print(f"error: {error}", file=out)
        return 1
    timeout = httpx.Timeout(settings.models_read_timeout_seconds, connect=settings.models_connect_timeout_seconds)
    failed = 0
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        downloader = Downloader(model_dir, client, out)
        for item in chosen:
            try:
                outcome = downloader.ensure(item)
            except Unreachable as error:
                print(f"offline: {error}. {OFFLINE_ADVICE}", file=out)
                return 2
            except DownloadFailed as error:
                print(f"error: {error}", file=out)
                failed += 1
                continue
            print(f"{item.name}: {outcome}, sha256 {item.sha256} ({model_dir / item.path})", file=out)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="downloads to fetch (default: all but GFPGANv1.3.pth)")
    args = parser.parse_args(argv)
    return run(DownloadSettings(), args.names, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
