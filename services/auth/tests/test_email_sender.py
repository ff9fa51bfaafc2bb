"""Email codes: addresses are checked and normalised, and messages go through a real SMTP
server (aiosmtpd on 127.0.0.1) that records what it accepts or refuses what the test says."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from auth_service.email_sender import EmailSendError, SmtpEmailSender, normalize_email
from auth_service.settings import Settings
from facerestore_common.errors import InvalidArgument

SENDER = "Face Restore <no-reply@facerestore.test>"
BODY = "Your Face Restore code is 493817. It expires in 5 minutes."
SUBJECT = "Your sign-in code"
USER = "mailer"
PASSWORD = "correct horse battery staple"


class RecordingHandler:
    """Accepts every message and keeps its envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(envelope.content, policy=policy.default) for envelope in self.envelopes]


class RefusingHandler(RecordingHandler):
    """Refuses every recipient, as a server does for an address it has no mailbox for."""

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        return "550 mailbox unavailable"


class OneUser:
    """An aiosmtpd authenticator that knows one user name and password."""

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        known = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        # handled=False lets aiosmtpd answer a failure itself (535); True would leave it silent.
        return AuthResult(success=known, handled=False)


class EphemeralPortController(Controller):
    """A Controller bound to a port the kernel picks (port 0), so parallel runs never collide.

    The stock Controller connects to its own `port` once to finish starting; here that port is
    read from the bound socket first.
    """

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _serve(handler: RecordingHandler, **smtp_options: Any) -> Iterator[Controller]:
    controller = EphemeralPortController(
        handler, hostname="127.0.0.1", port=0, server_hostname="smtp.test", **smtp_options
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _sender(port: int, **overrides: Any) -> SmtpEmailSender:
    options: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_from": SENDER,
        "smtp_timeout_seconds": 5.0,
    } | overrides
    return SmtpEmailSender(Settings(**options))


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def smtp_server(handler: RecordingHandler) -> Iterator[Controller]:
    yield from _serve(handler)


@pytest.fixture
def refusing_smtp_server() -> Iterator[Controller]:
    yield from _serve(RefusingHandler())


@pytest.fixture
def auth_smtp_server(handler: RecordingHandler) -> Iterator[Controller]:
    # AUTH over plain TCP is only for this loopback test; the server refuses it otherwise.
    yield from _serve(handler, authenticator=OneUser(), auth_require_tls=False)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections are refused, and no one else can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# Sending


async def test_message_arrives_with_to_from_subject_and_body(
    smtp_server: Controller, handler: RecordingHandler
) -> None:
    await _sender(smtp_server.port).send("anna@example.org", SUBJECT, BODY)

    [envelope] = handler.envelopes
    assert envelope.mail_from == "no-reply@facerestore.test"
    assert envelope.rcpt_tos == ["anna@example.org"]
    [message] = handler.messages()
    assert message["To"] == "anna@example.org"
    assert message["From"] == SENDER
    assert message["Subject"] == SUBJECT
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == BODY
    assert message["Message-ID"].endswith("@facerestore.test>")
    assert message["Date"]


async def test_a_refused_recipient_raises_with_the_reply_code_but_not_the_body(
    refusing_smtp_server: Controller,
) -> None:
    with pytest.raises(EmailSendError) as caught:
        await _sender(refusing_smtp_server.port).send("nobody@example.org", SUBJECT, BODY)

    text = str(caught.value)
    assert text == "smtp 550: mailbox unavailable"
    assert "493817" not in text
    assert BODY not in text


async def test_nothing_listening_raises_email_send_error(closed_port: int) -> None:
    with pytest.raises(EmailSendError) as caught:
        await _sender(closed_port).send("anna@example.org", SUBJECT, BODY)

    assert str(caught.value) == f"smtp 127.0.0.1:{closed_port} connection failed: Connection refused"
    assert "493817" not in str(caught.value)


async def test_a_server_that_never_greets_raises_after_the_timeout() -> None:
    # A listening socket nobody accepts from: the TCP handshake completes, no greeting comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        sender = _sender(silent.getsockname()[1], smtp_timeout_seconds=0.3)
        with pytest.raises(EmailSendError) as caught:
            await sender.send("anna@example.org", SUBJECT, BODY)

    assert "did not answer within 0.3s" in str(caught.value)


# Authentication


async def test_right_credentials_deliver(auth_smtp_server: Controller, handler: RecordingHandler) -> None:
    sender = _sender(auth_smtp_server.port, smtp_username=USER, smtp_password=PASSWORD)

    await sender.send("anna@example.org", SUBJECT, BODY)

    assert [envelope.rcpt_tos for envelope in handler.envelopes] == [["anna@example.org"]]


async def test_wrong_credentials_raise_with_the_reply_code(
    auth_smtp_server: Controller, handler: RecordingHandler
) -> None:
    sender = _sender(auth_smtp_server.port, smtp_username=USER, smtp_password="wrong password")

    with pytest.raises(EmailSendError) as caught:
        await sender.send("anna@example.org", SUBJECT, BODY)

    assert str(caught.value).startswith("smtp 535:")
    assert "wrong password" not in str(caught.value)
    assert handler.envelopes == []


async def test_no_credentials_are_sent_without_a_username(smtp_server: Controller, handler: RecordingHandler) -> None:
    # The plain server advertises no AUTH: logging in would fail, so delivery shows none was tried.
    sender = _sender(smtp_server.port, smtp_password="set but unused")

    await sender.send("anna@example.org", SUBJECT, BODY)

    assert len(handler.envelopes) == 1


def test_starttls_and_implicit_tls_together_are_refused() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        _sender(465, smtp_starttls=True, smtp_use_tls=True)


async def test_a_line_break_in_the_recipient_cannot_inject_headers(
    smtp_server: Controller, handler: RecordingHandler
) -> None:
    with pytest.raises(EmailSendError):
        await _sender(smtp_server.port).send("anna@example.org\r\nBcc: eve@example.org", SUBJECT, BODY)

    assert handler.envelopes == []


# Addresses


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        pytest.param("anna@example.org", "anna@example.org", id="plain"),
        pytest.param("  anna@example.org\n", "anna@example.org", id="surrounding-whitespace"),
        pytest.param("Anna.Schmidt@Example.ORG", "anna.schmidt@example.org", id="mixed-case"),
        pytest.param("anna+codes@mail.example.co.uk", "anna+codes@mail.example.co.uk", id="plus-tag-kept"),
        pytest.param("a.n.n.a@example.org", "a.n.n.a@example.org", id="dots-kept"),
        pytest.param("o'brien@xn--bcher-kva.example", "o'brien@xn--bcher-kva.example", id="apostrophe-punycode"),
        pytest.param("anna@bücher.example", "anna@xn--bcher-kva.example", id="internationalised-domain-to-punycode"),
        pytest.param("x@a-b.io", "x@a-b.io", id="hyphen-in-domain"),
        pytest.param(f"{'a' * 64}@example.org", f"{'a' * 64}@example.org", id="local-part-of-64"),
    ],
)
def test_valid_addresses_are_trimmed_and_lowercased(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


def test_the_same_address_in_different_cases_normalises_to_one_key() -> None:
    assert normalize_email("ANNA@EXAMPLE.ORG") == normalize_email("anna@example.org")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("anna.example.org", id="no-at"),
        pytest.param("anna@@example.org", id="two-ats"),
        pytest.param("a@b@example.org", id="at-in-local-part"),
        pytest.param("@example.org", id="empty-local-part"),
        pytest.param("anna@", id="empty-domain"),
        pytest.param("anna@localhost", id="domain-without-dot"),
        pytest.param("anna@example.", id="trailing-dot-in-domain"),
        pytest.param("anna@.example.org", id="leading-dot-in-domain"),
        pytest.param("anna@exa..mple.org", id="empty-domain-label"),
        pytest.param("anna@-example.org", id="label-starts-with-hyphen"),
        pytest.param("anna@example-.org", id="label-ends-with-hyphen"),
        pytest.param("anna@exa_mple.org", id="underscore-in-domain"),
        pytest.param(f"anna@{'a' * 64}.org", id="label-of-64"),
        pytest.param("anna@192.168.0.1", id="ip-address"),
        pytest.param("anna@[192.168.0.1]", id="domain-literal"),
        pytest.param(".anna@example.org", id="leading-dot-in-local-part"),
        pytest.param("anna.@example.org", id="trailing-dot-in-local-part"),
        pytest.param("an..na@example.org", id="double-dot-in-local-part"),
        pytest.param('"anna"@example.org', id="quoted-local-part"),
        pytest.param("an na@example.org", id="space"),
        pytest.param("anna@example.org\r\nBcc: eve@example.org", id="header-injection"),
        pytest.param("anna\t@example.org", id="tab"),
        pytest.param("anna\x00@example.org", id="nul"),
        pytest.param("jürgen@example.org", id="non-ascii-local-part"),
        pytest.param("Anna <anna@example.org>", id="display-name"),
        pytest.param(f"{'a' * 65}@example.org", id="local-part-of-65"),
        pytest.param(f"anna@{'a' * 62}.{'b' * 62}.{'c' * 62}.{'d' * 62}.org", id="longer-than-254"),
    ],
)
def test_invalid_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_email(raw)

    assert caught.value.reason == "invalid-email"
