from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.stack_harness import Mailbox, RunningStack, random_mobile


def face_photo(name: str = "t1.jpg") -> Path:
    """Real face photos shipped in the insightface wheel (installed without its dependencies)."""
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None, "insightface (test data) is not installed"
    path = Path(spec.origin).parent / "data" / "images" / name
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server that keeps what the stack sends (email sign-in codes)."""
    box = Mailbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A local OTLP/HTTP receiver that the shared stack's services export their spans to."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox, otlp_receiver: OtlpReceiver
) -> Iterator[RunningStack]:
    running = RunningStack(
        var_dir=tmp_path_factory.mktemp("stack"),
        stack_id=uuid.uuid4().hex,
        admin_phone=random_mobile(),
        smtp_port=mailbox.port,
        extra_env=otlp_receiver.environment(),
    )
    running.start()
    yield running
    code = running.stop()
    running.remove_shared_state()
    assert code == 0, running.logs_tail()


@pytest.fixture
def client(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        yield http
