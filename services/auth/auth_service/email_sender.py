"""Email addresses, checked and normalised, and the SMTP sender that carries email codes."""

from __future__ import annotations

import os
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from auth_service.settings import Settings
from facerestore_common.errors import InvalidArgument

# RFC 5321 4.5.3.1: at most 64 octets before the @.
_MAX_LOCAL_PART = 64
# A server reply is quoted in the error, never at any length.
_MAX_REPLY_CHARS = 200


class EmailSendError(Exception):
    """The provider did not take the message."""


def normalize_email(raw: str) -> str:
    """Return the address in the one form it is stored and compared in, or raise InvalidArgument.

    Syntax is checked by `email-validator` (RFC 5321/5322, no DNS lookups; non-ASCII local
    parts refused, internationalised domains kept in punycode, so every SMTP server takes
    them). The whole address is then lowercased: domains are case-insensitive, and no widely
    used provider treats the local part's case as significant, so ``Anna@Example.org`` and
    ``anna@example.org`` are one account. Beyond case the address is kept as typed (no
    dropping of dots or ``+tags``).
    """

    try:
        result = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise InvalidArgument(f"this is not a valid email address: {error}", reason="invalid-email") from None
    # The ASCII form: an internationalised domain in punycode, as SMTP carries it.
    address = (result.ascii_email or "").lower()
    local_part = address.rpartition("@")[0]
    if not address or len(local_part) > _MAX_LOCAL_PART:
        raise InvalidArgument("this is not a valid email address", reason="invalid-email")
    return address


class SmtpEmailSender:
    """Hands each message to the SMTP server in the settings (a relay or the provider's endpoint).

    One connection per message: codes are rare enough that a pool would only hold idle sockets
    that the server closes anyway.
    """

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        if settings.smtp_starttls and settings.smtp_use_tls:
            raise ValueError("SMTP_STARTTLS and SMTP_USE_TLS are exclusive: STARTTLS on 587, implicit TLS on 465")
        _, from_address = parseaddr(settings.smtp_from)
        if "@" not in from_address:
            raise ValueError(f"SMTP_FROM has no email address: {settings.smtp_from!r}")
        self._from = settings.smtp_from
        self._message_id_domain = from_address.rpartition("@")[2]
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._username = settings.smtp_username or None
        self._password = settings.smtp_password.get_secret_value() if settings.smtp_username else None
        self._start_tls = settings.smtp_starttls
        self._use_tls = settings.smtp_use_tls
        self._timeout = settings.smtp_timeout_seconds

    def _message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=self._message_id_domain)
        message.set_content(body)
        return message

    async def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one plain-text message to `to`, or raise EmailSendError.

        The error names the server's reply (code and text) or the network failure; it never
        quotes the body, which carries a one-time code.
        """
        try:
            message = self._message(to, subject, body)
        except ValueError as error:  # a header with a line break or an unparsable address
            raise EmailSendError(f"smtp message not built: {error}") from None
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._start_tls,
                use_tls=self._use_tls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPResponseException as error:
            raise EmailSendError(_reply(error.code, error.message)) from error
        except aiosmtplib.SMTPRecipientsRefused as error:
            refusal = error.recipients[0]
            raise EmailSendError(_reply(refusal.code, refusal.message)) from error
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as error:
            raise EmailSendError(f"smtp {self._host}:{self._port} did not answer within {self._timeout:g}s") from error
        except aiosmtplib.SMTPConnectError as error:
            raise EmailSendError(f"smtp {self._host}:{self._port} connection failed: {_os_reason(error)}") from error
        except aiosmtplib.SMTPException as error:
            raise EmailSendError(f"smtp {self._host}:{self._port}: {_one_line(error.message)}") from error
        except OSError as error:  # TLS failures and socket errors aiosmtplib does not wrap
            raise EmailSendError(f"smtp {self._host}:{self._port} connection failed: {_os_reason(error)}") from error
        except ValueError as error:  # an address aiosmtplib cannot put on the wire
            raise EmailSendError(f"smtp message not sent: {error}") from None


def _reply(code: int, text: str) -> str:
    return f"smtp {code}: {_one_line(text)}"


def _os_reason(error: BaseException) -> str:
    """The operating system's words for a failed connection ("Connection refused")."""
    for candidate in (error, error.__cause__):
        if isinstance(candidate, OSError) and candidate.errno:
            # asyncio rewrites strerror ("Connect call failed (...)"); the errno is the reason.
            return os.strerror(candidate.errno)
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror
    return _one_line(str(error))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REPLY_CHARS else line[: _MAX_REPLY_CHARS - 1] + "…"
