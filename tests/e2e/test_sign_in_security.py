"""Sign-in and access control through the running platform, as a client and an operator
meet them: limits with Retry-After, sessions that end at once, bans, email fallback,
key rotation without a restart."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import jwt

from tests.e2e.test_walkthrough import bearer
from tests.stack_harness import ROOT, Mailbox, RunningStack, random_mobile


def test_code_requests_are_limited_per_phone_with_retry_after(stack: RunningStack, client: httpx.Client) -> None:
    phone = random_mobile()
    for _ in range(5):
        assert client.post("/v1/auth/otp", json={"phone": phone}).status_code == 202
    refused = client.post("/v1/auth/otp", json={"phone": phone})
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 3000 < int(refused.headers["Retry-After"]) <= 3600
    body = refused.json()
    assert body["type"].endswith("/rate-limited") and body["limit"] == "code-requests"
    # Another number is not affected.
    assert client.post("/v1/auth/otp", json={"phone": random_mobile()}).status_code == 202


def test_logout_ends_the_access_token_at_once(stack: RunningStack, client: httpx.Client) -> None:
    phone = random_mobile()
    first = stack.sign_in(client, phone)
    second = stack.sign_in(client, phone)
    assert client.post("/v1/auth/logout", headers=bearer(first)).status_code == 204
    refused = client.get("/v1/me", headers=bearer(first))
    assert refused.status_code == 401 and refused.json()["type"].endswith("/session-revoked")
    assert client.get("/v1/images", headers=bearer(first)).status_code == 401
    # The user's other session is untouched.
    assert client.get("/v1/me", headers=bearer(second)).status_code == 200


def test_reused_refresh_token_ends_the_session_and_its_access_token(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    renewed = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json()
    assert client.get("/v1/me", headers=bearer(renewed)).status_code == 200
    assert client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    assert client.get("/v1/me", headers=bearer(renewed)).status_code == 401


def test_a_banned_user_is_out_at_once_and_cannot_come_back(stack: RunningStack, client: httpx.Client) -> None:
    admin = stack.sign_in(client, stack.admin_sign_in_phone())
    phone = random_mobile()
    user = stack.sign_in(client, phone)
    user_id = client.get("/v1/me", headers=bearer(user)).json()["id"]

    banned = client.post(f"/v1/admin/users/{user_id}/ban", json={"reason": "spam"}, headers=bearer(admin))
    assert banned.status_code == 200 and banned.json()["banned"] is True
    assert client.get("/v1/me", headers=bearer(user)).status_code == 401
    refused = client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    # As the README says: the app can tell the user why they are out.
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("/account-suspended")

    # Asking for a code looks the same as for anyone, but no SMS goes out.
    sent_before = stack.outbox.read_text().count(phone)
    assert client.post("/v1/auth/otp", json={"phone": phone}).status_code == 202
    assert stack.outbox.read_text().count(phone) == sent_before

    assert client.delete(f"/v1/admin/users/{user_id}/ban", headers=bearer(admin)).json()["banned"] is False
    assert client.get("/v1/me", headers=bearer(stack.sign_in(client, phone))).status_code == 200

    # Only admins ban, and an admin cannot ban themselves.
    assert client.post(f"/v1/admin/users/{user_id}/ban", json={}, headers=bearer(user)).status_code == 401
    admin_id = client.get("/v1/me", headers=bearer(admin)).json()["id"]
    assert client.post(f"/v1/admin/users/{admin_id}/ban", json={}, headers=bearer(admin)).status_code == 422


def test_email_is_a_fallback_sign_in_once_confirmed(
    stack: RunningStack, client: httpx.Client, mailbox: Mailbox
) -> None:
    tokens = stack.sign_in(client, random_mobile())
    user_id = client.get("/v1/me", headers=bearer(tokens)).json()["id"]
    address = f"user-{user_id[:8]}@example.org"

    # Before the address is confirmed it signs nobody in, and the answer does not say so.
    assert client.post("/v1/auth/email/otp", json={"email": address}).status_code == 202
    assert mailbox.count_to(address) == 0

    assert client.post("/v1/me/email", json={"email": address}, headers=bearer(tokens)).status_code == 202
    code = mailbox.latest_code(address)
    confirmed = client.post("/v1/me/email/verify", json={"email": address, "code": code}, headers=bearer(tokens))
    assert confirmed.status_code == 200 and confirmed.json()["email"] == address

    assert client.post("/v1/auth/email/otp", json={"email": address.upper()}).status_code == 202
    code = mailbox.latest_code(address)
    signed_in = client.post("/v1/auth/email/otp/verify", json={"email": address, "code": code})
    assert signed_in.status_code == 200
    assert client.get("/v1/me", headers=bearer(signed_in.json())).json()["id"] == user_id
    assert client.post("/v1/auth/email/otp/verify", json={"email": address, "code": code}).status_code == 401


def test_rotated_key_signs_new_tokens_while_old_tokens_keep_working(stack: RunningStack, client: httpx.Client) -> None:
    old = stack.sign_in(client, random_mobile())
    env = {**stack.environment(), "JWT_KEY_DIR": str(stack.var_dir / "keys")}
    rotated = subprocess.run(
        [sys.executable, "-m", "auth_service.cli", "rotate-keys"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    new_kid = rotated.stdout.split()[3].rstrip(";")
    assert (stack.var_dir / "keys" / f"{new_kid}.pem").exists()

    # The auth service picks the key up without a restart and publishes it at once...
    deadline = time.monotonic() + 10
    while new_kid not in [key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]]:
        assert time.monotonic() < deadline, "the rotated key was never published"
        time.sleep(0.2)
    # ...but signs with it only once its activation delay has passed.
    assert jwt.get_unverified_header(stack.sign_in(client, random_mobile())["access_token"])["kid"] != new_kid
    deadline = time.monotonic() + 30
    new: dict[str, str] = {}
    while time.monotonic() < deadline:
        new = stack.sign_in(client, random_mobile())
        if jwt.get_unverified_header(new["access_token"])["kid"] == new_kid:
            break
        time.sleep(1)
    assert jwt.get_unverified_header(new["access_token"])["kid"] == new_kid
    assert jwt.get_unverified_header(old["access_token"])["kid"] != new_kid
    assert client.get("/v1/me", headers=bearer(old)).status_code == 200
    fresh = client.get("/v1/me", headers=bearer(new))
    assert fresh.status_code == 200, fresh.text
