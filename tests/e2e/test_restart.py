"""Stopping the stack leaves no process behind; starting it again keeps users and history."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.conftest import face_photo
from tests.e2e.test_walkthrough import bearer, wait_until_settled
from tests.stack_harness import RunningStack, random_mobile


def test_restart_keeps_users_and_history_and_leaves_nothing_running(tmp_path: Path) -> None:
    stack = RunningStack(var_dir=tmp_path, stack_id=uuid.uuid4().hex, admin_phone=random_mobile())
    phone = random_mobile()
    stack.start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            tokens = stack.sign_in(client, phone)
            user_id = client.get("/v1/me", headers=bearer(tokens)).json()["id"]
            response = client.post(
                "/v1/images",
                headers=bearer(tokens),
                files={"file": ("f.png", face_photo("Tom_Hanks_54745.png").read_bytes(), "image/png")},
            )
            image_id = response.json()["id"]
            wait_until_settled(client, tokens, image_id)
            # The stack's own mail server takes email codes (kept as files under var/mail).
            address = "restart@example.org"
            assert client.post("/v1/me/email", json={"email": address}, headers=bearer(tokens)).status_code == 202
            assert any(address in path.read_text() for path in (tmp_path / "mail" / "new").iterdir())
    finally:
        assert stack.stop() == 0, stack.logs_tail()
    assert stack.leftover_processes() == []

    stack.start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            # Tokens signed before the restart still verify: the signing key was kept.
            assert client.get("/v1/me", headers=bearer(tokens)).json()["id"] == user_id
            tokens = stack.sign_in(client, phone)
            assert client.get("/v1/me", headers=bearer(tokens)).json()["id"] == user_id
            items = client.get("/v1/images", headers=bearer(tokens)).json()["items"]
            assert [item["id"] for item in items] == [image_id]
            assert items[0]["status"] == "done"
            assert client.get(items[0]["restored_url"]).status_code == 200
    finally:
        assert stack.stop() == 0, stack.logs_tail()
        stack.remove_shared_state()
    assert stack.leftover_processes() == []
