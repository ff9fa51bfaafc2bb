"""Auth's own metrics: codes sent and failed by provider, verifications by result, sign-ins."""

from __future__ import annotations

from prometheus_client import Counter

# channel: sms or email; provider: the sender's name (twilio, outbox, console, smtp).
CODES_SENT = Counter("auth_codes_sent_total", "Codes the provider took", ["channel", "provider"])
CODE_SEND_FAILURES = Counter(
    "auth_code_send_failures_total", "Codes the provider did not take (no code is valid then)", ["channel", "provider"]
)
# result: ok, wrong, missing (expired, used or never sent), malformed.
CODE_RESULTS = ("ok", "wrong", "missing", "malformed")
CODE_VERIFICATIONS = Counter("auth_code_verifications_total", "Code verifications by result", ["channel", "result"])
SIGN_INS = Counter("auth_sign_ins_total", "Sessions started by signing in", ["channel"])
SIGN_UPS = Counter("auth_sign_ups_total", "Users created by their first sign-in")
