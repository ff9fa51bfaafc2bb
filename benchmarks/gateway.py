"""The gateway's cost per request on this machine, next to a bare FastAPI app, in one run.

    .venv/bin/python benchmarks/gateway.py [--duration 8] [--connections 16] [--rounds 5]
                                           [--uploads 40] [--upload-interval 0.25]
                                           [--profile DIR] [--out PATH]

It starts the whole platform as `make run` does (tests/stack_harness.py: every service a
process, on free ports, against this machine's RabbitMQ and Redis) and, beside it, a bare
FastAPI app answering /healthz under the same uvicorn configuration as the gateway (uvloop,
httptools). Then `wrk` (Debian package `wrk`; --latency, 16 connections, 8 s each, after a 2 s
warm-up) loads, one after the other: the bare /healthz, the bare app's /redis (the same answer
after one Redis round trip: the floor for any route that, like every signed-in route of the
gateway, asks Redis once per request), the gateway's /healthz, and as a signed-in user
GET /v1/images?limit=20 (a page of 20 images), GET /v1/images/{id} and GET /v1/me. The list
and the image are read again and again with one token, so after its first reads the gateway's
page cache answers them; the list is loaded once more with a query parameter that changes on
every request (and that the route ignores), so that every read misses the cache and is built
by history: the cost of a list the first time it is read after a change.
That is done --rounds times; each ratio to the bare app is taken within its round (seconds
apart, under the same load from whatever else runs on the machine), and the medians over the
rounds are reported. Last, a 200 KB JPEG (a real photo, 1280 x 886) is uploaded --uploads times,
one at a time, and the time until the 202 is measured, twice: paced, one upload every
--upload-interval seconds (0.25: the latency a person sees, against which the target is checked),
then back to back. Back to back, each upload's own work after its 202 (publishing its event,
history recording it, admin counting it, and the Mongo stand-in's part in each: most of the
platform's CPU per upload, on the same two cores) runs while the next is being accepted, so
that figure is the latency of a client uploading as fast as the machine accepts, not of one
upload. It prints req/s, p50/p99,
errors and the ratios, checks the targets of issue 12 and writes everything as JSON (--out).

The inference worker runs with INFERENCE_ROLES=embed, so the uploads wait in the queue instead
of being restored on the same two cores while latencies are measured (in production it runs on
its own nodes). The classical model is offered through a standby entry in the model registry, as
for a worker group scaled to zero, so that uploads are accepted for it. The per-IP limit is
raised so that one address can load the gateway, but it is still counted on every request.
--profile DIR records the gateway with py-spy during its runs of the first round (raw stacks in
DIR, the hottest functions printed)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from PIL import Image
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facerestore_common.model_registry import ModelOffer, ModelRegistry  # noqa: E402
from inference_service.announcer import standby_id  # noqa: E402
from inference_service.models import MAX_UPSCALE  # noqa: E402
from inference_service.restoration.classical import ClassicalRestorer  # noqa: E402
from tests.conftest import face_photo  # noqa: E402 - the repository root is put on the path first
from tests.stack_harness import RunningStack, free_ports, random_mobile  # noqa: E402

UPLOAD_BYTES = 200 * 1024
LIST = "GET /v1/images?limit=20"
LIST_BUILT = "the same, each read built"
WARM_UP_SECONDS = 2
TARGETS = {
    "gateway_healthz_ratio_min": 0.8,
    "list_ratio_min": 0.35,
    "list_p99_ms_max": 40.0,
    "upload_p50_ms_max": 40.0,
}
# The bare app: what FastAPI and uvicorn cost by themselves, under the gateway's server options.
BARE_APP = """
import sys
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis
from gateway_service.server import server_options
from gateway_service.settings import Settings

app = FastAPI()
settings = Settings()
redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}

@app.get("/redis")
async def one_redis_round_trip() -> dict[str, str]:
    await redis.exists("gateway-bench:absent")
    return {"status": "ok"}

options = server_options(settings)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False, **options)
"""


@dataclass
class Run:
    name: str
    url: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors
    ratio_to_bare: float = 0.0
    # CPU time per request of the process that answered (the bare app or the gateway), and of
    # every process of the platform together: robust where req/s depend on what else runs.
    server_cpu_us: float = 0.0
    platform_cpu_us: float = 0.0


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


# A wrk script that makes every request's query new: `&miss=<thread>-<count>`.
EVERY_QUERY_NEW = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
count = 0
function request()
  count = count + 1
  return wrk.format(nil, wrk.path .. "&miss=" .. thread_number .. "-" .. count)
end
"""


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str], script: Path | None = None) -> str:
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    result = subprocess.run([*command, url], check=True, capture_output=True, text=True)  # noqa: S603
    return result.stdout


def median_run(taken: list[Run]) -> Run:
    """Each figure's median over the rounds (errors: their sum)."""
    return Run(
        name=taken[0].name,
        url=taken[0].url,
        requests_per_second=statistics.median(run.requests_per_second for run in taken),
        p50_ms=statistics.median(run.p50_ms for run in taken),
        p99_ms=statistics.median(run.p99_ms for run in taken),
        requests=sum(run.requests for run in taken),
        errors=sum(run.errors for run in taken),
        ratio_to_bare=statistics.median(run.ratio_to_bare for run in taken),
        server_cpu_us=statistics.median(run.server_cpu_us for run in taken),
        platform_cpu_us=statistics.median(run.platform_cpu_us for run in taken),
    )


def parse_wrk(name: str, url: str, output: str) -> Run:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(count) for count in sockets.groups()) if sockets else 0
    return Run(name, url, rate, p50, p99, requests, errors)


def start_bare_app(port: int) -> subprocess.Popen[bytes]:
    # In a session of its own, as deploy/local/stack.py starts every service: under Linux's
    # autogroup scheduling a session is a CPU group, and sharing wrk's would flatter the bare app.
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", BARE_APP, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the bare app did not start")


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def gateway_pid(stack: RunningStack) -> int:
    for pid in stack.leftover_processes():
        if b"gateway_service.main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise SystemExit("no gateway process found")


def jpeg_of_size(target: int) -> bytes:
    """A real photo as a phone or a web page would save it: t1.jpg (1280 x 886, six faces) at its
    own size, at the JPEG quality that lands nearest `target` bytes (q91 for 200 KB); smaller
    targets are met by scaling down."""
    photo = Image.open(face_photo("t1.jpg")).convert("RGB")
    candidates = []
    for scale in (1.0, 0.75, 0.5, 0.35):
        scaled = photo if scale == 1.0 else photo.resize((int(photo.width * scale), int(photo.height * scale)))
        for quality in range(60, 99):
            buffer = io.BytesIO()
            scaled.save(buffer, format="JPEG", quality=quality)
            candidates.append(buffer.getvalue())
        if min(abs(len(content) - target) for content in candidates) < target // 20:
            break
    return min(candidates, key=lambda content: abs(len(content) - target))


class Profiler:
    """py-spy recording the gateway while a run loads it."""

    def __init__(self, directory: Path | None, pid: int) -> None:
        self.directory = directory
        self.pid = pid
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, name: str) -> None:
        if self.directory is None:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._raw = self.directory / f"{name}.txt"
        self.process = subprocess.Popen(  # noqa: S603 - py-spy from the virtualenv
            [py_spy, "record", "--pid", str(self.pid), "--rate", "250", "--format", "raw", "-o", str(self._raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(2)
        self.process.wait(timeout=60)
        self.process = None
        print_hottest(self._raw)


def print_hottest(raw: Path, top: int = 30) -> None:
    """The event loop thread's functions by their share of its busy samples: on the stack (incl) and on top (self)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.startswith("_run_module_as_main"):
            continue  # other threads: the metrics server, thread pools waiting for work
        count = int(count_text)
        frames = [re.sub(r" \((.*/)?([^/]+):\d+\)$", r" (\2)", frame) for frame in stack.split(";")]
        if "select (selectors.py)" in frames[-1] or "EpollSelector" in frames[-1]:
            idle += count
            continue
        busy += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    print(f"    py-spy: event loop busy in {100 * busy / max(1, busy + idle):.0f}% of samples ({raw})")
    for frame, count in inclusive.most_common(top):
        print(f"    {100 * count / busy:5.1f}% incl {100 * own[frame] / busy:5.1f}% self  {frame}")
    print("    most self time:")
    for frame, count in own.most_common(15):
        print(f"    {100 * count / busy:5.1f}% self  {frame}")


def offer_classical_on_standby(stack: RunningStack) -> None:
    """The registry entry a scaled-to-zero group keeps: uploads are accepted and wait in its queue."""
    offer = ModelOffer("classical", ClassicalRestorer.model_id, ClassicalRestorer.version, "", False, None, MAX_UPSCALE)

    async def announce() -> None:
        redis = Redis.from_url(stack.environment().get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        try:
            await ModelRegistry(redis, stack.namespace).announce(standby_id("bench"), [offer], ttl_seconds=3600)
        finally:
            await redis.aclose()

    asyncio.run(announce())


def sign_in_with_images(stack: RunningStack, count: int) -> tuple[dict[str, str], str]:
    photo = jpeg_of_size(40 * 1024)
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        tokens = stack.sign_in(client, random_mobile())
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        image_id = ""
        for index in range(count):
            answer = client.post(
                "/v1/images", headers=headers, files={"file": (f"face{index}.jpg", photo, "image/jpeg")}
            )
            assert answer.status_code == 202, answer.text
            image_id = answer.json()["id"]
        # History records an upload from its event, moments after the 202.
        deadline = time.monotonic() + 30
        while len(client.get("/v1/images", params={"limit": 20}, headers=headers).json()["items"]) < min(20, count):
            if time.monotonic() > deadline:
                raise SystemExit("history did not record the uploads within 30 s")
            time.sleep(0.2)
    return headers, image_id


def measure_uploads(
    stack: RunningStack, headers: dict[str, str], count: int, interval_seconds: float = 0.0
) -> dict[str, float]:
    """Time to the 202 of `count` uploads sent one at a time: back to back (interval 0), or each
    at its own time on a fixed schedule (one every `interval_seconds`, sent at once if the one
    before is still running, which at these rates it never is)."""
    content = jpeg_of_size(UPLOAD_BYTES)
    seconds = []
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        started_schedule = time.perf_counter()
        for index in range(count + 3):
            time.sleep(max(0.0, started_schedule + index * interval_seconds - time.perf_counter()))
            started = time.perf_counter()
            answer = client.post(
                "/v1/images", headers=headers, files={"file": (f"upload{index}.jpg", content, "image/jpeg")}
            )
            elapsed = time.perf_counter() - started
            assert answer.status_code == 202, answer.text
            if index >= 3:  # the first few warm up connections and caches
                seconds.append(elapsed * 1000)
    seconds.sort()
    return {
        "bytes": len(content),
        "uploads": count,
        "interval_seconds": interval_seconds,
        "p50_ms": statistics.median(seconds),
        "p90_ms": seconds[int(0.9 * (len(seconds) - 1))],
        "max_ms": seconds[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="every run this many times; medians are reported")
    parser.add_argument("--uploads", type=int, default=40, help="200 KB uploads timed one at a time, each way")
    parser.add_argument("--upload-interval", type=float, default=0.25, help="seconds between the paced uploads' starts")
    parser.add_argument("--profile", type=Path, default=None, help="record the gateway with py-spy into DIR")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gateway.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package `wrk`; `make bench` installs it)")

    os.environ.update(
        INFERENCE_ROLES="embed",
        RATE_LIMIT_PER_IP="100000000/minute",
        RATE_LIMIT_UPLOADS_PER_USER="100000/hour",
    )
    var_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    stack = RunningStack(var_dir=var_dir, stack_id=uuid.uuid4().hex, admin_phone=random_mobile())
    bare_port = free_ports(1)[0]
    bare = start_bare_app(bare_port)
    try:
        print("starting the platform...", flush=True)
        stack.start()
        offer_classical_on_standby(stack)
        headers, image_id = sign_in_with_images(stack, 25)
        gateway_process = gateway_pid(stack)
        platform_pids = stack.leftover_processes()
        profiler = Profiler(args.profile, gateway_process)
        gateway = stack.base_url
        every_query_new = var_dir / "every-query-new.lua"
        every_query_new.write_text(EVERY_QUERY_NEW)
        plan: list[tuple[str, str, dict[str, str], Path | None]] = [
            ("bare /healthz", f"http://127.0.0.1:{bare_port}/healthz", {}, None),
            ("bare + 1 Redis round trip", f"http://127.0.0.1:{bare_port}/redis", {}, None),
            ("gateway /healthz", f"{gateway}/healthz", {}, None),
            (LIST, f"{gateway}/v1/images?limit=20", headers, None),
            (LIST_BUILT, f"{gateway}/v1/images?limit=20", headers, every_query_new),
            ("GET /v1/images/{id}", f"{gateway}/v1/images/{image_id}", headers, None),
            ("GET /v1/me", f"{gateway}/v1/me", headers, None),
        ]
        rounds: list[list[Run]] = []
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number} of {args.rounds}", flush=True)
            runs: list[Run] = []
            for name, url, run_headers, script in plan:
                wrk(url, WARM_UP_SECONDS, args.connections, run_headers, script)
                profiled = not name.startswith("bare") and round_number == 1
                if profiled:
                    profiler.start(re.sub(r"\W+", "_", name).strip("_"))
                server = [bare.pid] if name.startswith("bare") else [gateway_process]
                before = cpu_seconds(server), cpu_seconds(platform_pids)
                run = parse_wrk(name, url, wrk(url, args.duration, args.connections, run_headers, script))
                used = cpu_seconds(server) - before[0], cpu_seconds(platform_pids) - before[1]
                run.server_cpu_us = 1e6 * used[0] / max(1, run.requests)
                run.platform_cpu_us = 1e6 * used[1] / max(1, run.requests)
                if profiled:
                    profiler.stop()
                # The ratio within the round: the bare app was loaded seconds before, under the same load.
                run.ratio_to_bare = run.requests_per_second / runs[0].requests_per_second if runs else 1.0
                runs.append(run)
                print(
                    f"  {name:26s} {run.requests_per_second:8.0f} req/s  p50 {run.p50_ms:6.2f} ms"
                    f"  p99 {run.p99_ms:6.2f} ms  errors {run.errors}  {run.ratio_to_bare:.2f} x bare"
                    f"  cpu/request: server {run.server_cpu_us:5.0f} us, platform {run.platform_cpu_us:5.0f} us",
                    flush=True,
                )
            rounds.append(runs)
        runs = [median_run([taken[index] for taken in rounds]) for index in range(len(plan))]
        print(f"median of {args.rounds} rounds:")
        for run in runs:
            print(
                f"  {run.name:26s} {run.requests_per_second:8.0f} req/s  p50 {run.p50_ms:6.2f} ms"
                f"  p99 {run.p99_ms:6.2f} ms  errors {run.errors}  {run.ratio_to_bare:.2f} x bare"
                f"  cpu/request: server {run.server_cpu_us:5.0f} us, platform {run.platform_cpu_us:5.0f} us",
                flush=True,
            )
        uploads = measure_uploads(stack, headers, args.uploads, args.upload_interval)
        back_to_back = measure_uploads(stack, headers, args.uploads)
        for name, taken in (("paced", uploads), ("back to back", back_to_back)):
            every = f"one every {taken['interval_seconds'] * 1000:.0f} ms" if taken["interval_seconds"] else name
            print(
                f"upload accepted ({taken['bytes'] // 1024} KB JPEG, {args.uploads}, {every}): "
                f"p50 {taken['p50_ms']:.1f} ms  p90 {taken['p90_ms']:.1f} ms  max {taken['max_ms']:.1f} ms"
            )
    finally:
        bare.terminate()
        bare.wait()
        stack.stop()
        stack.remove_shared_state()
        shutil.rmtree(var_dir, ignore_errors=True)

    by_name = {run.name: run for run in runs}
    listing = by_name[LIST]
    checks = {
        "gateway /healthz >= 0.8 x bare": (
            by_name["gateway /healthz"].ratio_to_bare >= TARGETS["gateway_healthz_ratio_min"]
        ),
        "list >= 0.35 x bare": listing.ratio_to_bare >= TARGETS["list_ratio_min"],
        "list p99 <= 40 ms": listing.p99_ms <= TARGETS["list_p99_ms_max"],
        "no errors": all(run.errors == 0 for run in runs),
        "upload p50 <= 40 ms (paced)": uploads["p50_ms"] <= TARGETS["upload_p50_ms_max"],
    }
    for check, held in checks.items():
        print(f"  {'ok  ' if held else 'MISS'} {check}")
    load = os.getloadavg()
    print(f"load average during the run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": load},
                "settings": {"duration_seconds": args.duration, "connections": args.connections, "rounds": args.rounds},
                "runs": [asdict(run) for run in runs],
                "rounds": [[asdict(run) for run in taken] for taken in rounds],
                "upload_accepted": uploads,
                "upload_accepted_back_to_back": back_to_back,
                "targets": TARGETS,
                "checks": checks,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
