"""configure_logging's output: one JSON object per line, from our own events and from other
libraries' records alike, each with the service, level, time, request id and trace context,
whatever the values logged (a datetime, an object JSON has no form for, an int beyond 64 bits,
keys that are not strings)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from facerestore_common.logging import configure_logging, get_logger, request_id_var

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
AT = datetime(2026, 12, 2, 7, 36, 28, 15671, tzinfo=UTC)
NOISY = ("aiormq", "aio_pika", "pymongo", "urllib3", "httpx", "httpcore")


class Opaque:
    """A value JSON has no form for: a line carries its repr."""

    def __repr__(self) -> str:
        return "<Opaque 7>"


class Score(float):
    """A float subclass, as numpy.float64 is: a line carries its number."""


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """configure_logging changes the whole process: the other tests get back what they ran with."""
    config = structlog.get_config() if structlog.is_configured() else None
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy_levels = {name: logging.getLogger(name).level for name in NOISY}
    yield
    if config is None:
        structlog.reset_defaults()
    else:
        structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy_levels.items():
        logging.getLogger(name).setLevel(noisy_level)


def log_both_ways() -> None:
    """Configures logging into the current sys.stdout and logs five lines: three of ours, two
    through the standard library, inside a request and a span."""
    configure_logging("logging-test")
    log = get_logger("test")
    library = logging.getLogger("some.library")
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    token = request_id_var.set("req-1")
    try:
        with trace.use_span(span):
            log.info("upload_accepted", image_id="img-1", at=AT, owner=Opaque(), score=Score(0.5), note="Oma 🧑‍🚀")
            log.info("counted", size=2**70 + 1, by_face={1: "a", None: "b"})  # orjson refuses both
            library.warning("disk %s is %d%% full", "/data", 97)
            try:
                raise ValueError("broken pipe")
            except ValueError:
                library.exception("send failed")
                log.exception("publish_failed")
    finally:
        request_id_var.reset(token)


def assert_lines(output: str) -> None:
    assert output.endswith("\n")
    lines = [json.loads(line) for line in output.splitlines()]
    events = ["upload_accepted", "counted", "disk /data is 97% full", "send failed", "publish_failed"]
    assert [line["event"] for line in lines] == events
    for line in lines:
        assert datetime.fromisoformat(line.pop("timestamp")).tzinfo is not None
        assert line.pop("service") == "logging-test"
        assert line.pop("request_id") == "req-1"
        assert line.pop("trace_id") == f"{TRACE_ID:032x}"
        assert line.pop("span_id") == f"{SPAN_ID:016x}"
    accepted, counted, warned, failed, own_failed = lines
    assert accepted == {
        "event": "upload_accepted",
        "level": "info",
        "image_id": "img-1",
        "at": repr(AT),  # as json.dumps with structlog's fallback always wrote it
        "owner": "<Opaque 7>",
        "score": 0.5,
        "note": "Oma 🧑‍🚀",
    }
    assert counted == {"event": "counted", "level": "info", "size": 2**70 + 1, "by_face": {"1": "a", "null": "b"}}
    assert warned == {"event": "disk /data is 97% full", "level": "warning"}
    for record in (failed, own_failed):
        assert record.pop("level") == "error"
        exception = record.pop("exception")
        assert exception.startswith("Traceback") and exception.endswith("ValueError: broken pipe")
    assert failed == {"event": "send failed"} and own_failed == {"event": "publish_failed"}


def test_lines_written_into_pytests_captured_stdout_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    log_both_ways()

    assert_lines(capsys.readouterr().out)


def test_a_stdout_without_a_byte_buffer_gets_the_same_lines_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)

    log_both_ways()

    assert_lines(stdout.getvalue())


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "as_read"),
    [
        (2**64, 2**64),
        (-(2**63) - 1, -(2**63) - 1),
        ({1.5: "x"}, {"1.5": "x"}),
        ("\ud800", "\ud800"),
        (nested(300), nested(300)),
    ],
    ids=["int-beyond-64-bits", "int-below-64-bits", "float-key", "lone-surrogate", "nested-beyond-orjsons-limit"],
)
def test_a_value_orjson_refuses_costs_its_line_the_slower_rendering_never_the_log_call(
    value: object, as_read: object, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("logging-test")

    get_logger("test").info("odd_value", value=value)

    line = json.loads(capsys.readouterr().out)
    assert line["event"] == "odd_value" and line["value"] == as_read
