"""Locust users of the photo API, for the load and chaos runs (run headless by benchmarks/load).

Each user signs in with its own test number (TEST_PHONE_CODES: the fixed codes that the auth
service accepts in that run's environment only), then, with a pause between actions:
uploads a real photo (sizes and face counts vary), polls its pending images, downloads
finished results, sometimes deletes one, lists its history and, when the API has
POST /v1/search, searches by one of its restored faces or by a photo.

A user behaves like a careful client: every upload carries an Idempotency-Key and is
retried with the same key after a connection error, 409, 429 or 5xx, with backoff and
within bounds, so that an outage makes it wait rather than lose or double its upload.

Every upload is bounded: LOAD_MAX_UPLOADS accepted uploads in all (a given-up upload gives
its place back, within twice that many attempts), after which the users stop; Locust's
--run-time bounds the time. What happened goes to LOAD_JOURNAL, one JSON line per event
(accepted, gave_up, refused, final, deleted), which the runner reconciles with the server.
Traffic goes to the --host given (the runner passes 127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import IO, Any

import gevent
from locust import HttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser

from benchmarks.load.photos import Photo, load_photos

REQUEST_TIMEOUT_SECONDS = 30.0
UPLOAD_MAX_ATTEMPTS = 12
UPLOAD_RETRY_SECONDS = 120.0
SIGN_IN_MAX_ATTEMPTS = 20
DELETE_SHARE = float(os.environ.get("LOAD_DELETE_SHARE", "0.08"))
DOWNLOAD_SHARE = 0.5
PHOTO_SEARCH_SHARE = 0.2
LINGER_SECONDS = float(os.environ.get("LOAD_LINGER_SECONDS", "5"))
# Access tokens live 15 minutes; a user signs in again before its token runs out.
TOKEN_REFRESH_SECONDS = 600.0


def _test_numbers() -> list[tuple[str, str]]:
    pairs = (entry.partition("=") for entry in os.environ.get("TEST_PHONE_CODES", "").split(",") if entry.strip())
    return [(phone.strip(), code.strip()) for phone, _, code in pairs]


@dataclass
class Budget:
    """Accepted uploads still to make; a reservation is returned when its upload is given up."""

    limit: int
    accepted: int = 0
    reserved: int = 0
    attempts: int = 0
    spent_at: float | None = None

    def take(self) -> bool:
        if self.accepted + self.reserved >= self.limit or self.attempts >= 2 * self.limit:
            return False
        self.reserved += 1
        self.attempts += 1
        return True

    def settle(self, accepted: bool) -> None:
        self.reserved -= 1
        if accepted:
            self.accepted += 1
        if self.spent_at is None and (self.accepted >= self.limit or self.attempts >= 2 * self.limit):
            self.spent_at = time.monotonic()

    @property
    def spent(self) -> bool:
        return self.spent_at is not None and self.reserved == 0


@dataclass
class Shared:
    budget: Budget
    numbers: list[tuple[str, str]]
    photos: list[Photo]
    journal: IO[str] | None = None
    search_available: bool = False
    next_number: int = 0
    users: list[PhotoUser] = field(default_factory=list)

    def write(self, event: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.write(json.dumps({"e": event, "t": time.time(), **fields}) + "\n")
            self.journal.flush()


SHARED = Shared(Budget(int(os.environ.get("LOAD_MAX_UPLOADS", "100"))), _test_numbers(), [])


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    SHARED.photos = load_photos(os.environ.get("LOAD_PHOTO_MIX", "full"))
    SHARED.journal = open(os.environ["LOAD_JOURNAL"], "a")
    SHARED.search_available = _has_search(environment.host or "")
    SHARED.write("start", search=SHARED.search_available, budget=SHARED.budget.limit)
    gevent.spawn(_stop_when_done, environment)


@events.test_stop.add_listener
def _on_test_stop(**_kwargs: Any) -> None:
    SHARED.write("stop", accepted=SHARED.budget.accepted, attempts=SHARED.budget.attempts)
    if SHARED.journal is not None:
        SHARED.journal.close()
        SHARED.journal = None


def _has_search(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"{host}/openapi.json", timeout=10) as response:  # noqa: S310 - the run's host
            return "/v1/search" in json.load(response).get("paths", {})
    except (OSError, ValueError):
        return False


def _stop_when_done(environment: Environment) -> None:
    """Quit once the budget is spent and the users' images finished (or LINGER_SECONDS later)."""
    while True:
        gevent.sleep(0.5)
        budget = SHARED.budget
        if not budget.spent or budget.spent_at is None:
            continue
        idle = all(not user.pending for user in SHARED.users)
        if idle or time.monotonic() - budget.spent_at > LINGER_SECONDS:
            if environment.runner is not None:
                environment.runner.quit()
            return


class PhotoUser(HttpUser):
    wait_time = between(float(os.environ.get("LOAD_WAIT_MIN", "0.5")), float(os.environ.get("LOAD_WAIT_MAX", "2")))

    def on_start(self) -> None:
        if not SHARED.numbers:
            raise StopUser
        self.phone, self.code = SHARED.numbers[SHARED.next_number % len(SHARED.numbers)]
        SHARED.next_number += 1
        self.token = ""
        self.signed_in_at = 0.0
        self.pending: list[str] = []
        self.with_faces: list[str] = []
        SHARED.users.append(self)
        self.sign_in()

    def on_stop(self) -> None:
        if self in SHARED.users:
            SHARED.users.remove(self)

    def sign_in(self) -> None:
        for attempt in range(1, SIGN_IN_MAX_ATTEMPTS + 1):
            with self.client.post(
                "/v1/auth/otp/verify",
                json={"phone": self.phone, "code": self.code},
                name="/v1/auth/otp/verify",
                timeout=REQUEST_TIMEOUT_SECONDS,
                catch_response=True,
            ) as response:
                if response.status_code == 200:
                    self.token = response.json()["access_token"]
                    self.signed_in_at = time.monotonic()
                    return
                response.failure(f"sign-in answered {response.status_code}")
            gevent.sleep(min(10.0, 0.5 * 2**attempt))
        raise StopUser

    def _headers(self, **extra: str) -> dict[str, str]:
        if time.monotonic() - self.signed_in_at > TOKEN_REFRESH_SECONDS:
            self.sign_in()
        return {"Authorization": f"Bearer {self.token}", **extra}

    def _pick_photo(self) -> Photo:
        return random.choices(SHARED.photos, weights=[photo.weight for photo in SHARED.photos])[0]  # noqa: S311

    @task(6)
    def upload(self) -> None:
        if not SHARED.budget.take():
            if SHARED.budget.spent and not self.pending:
                raise StopUser
            return
        accepted = False
        try:
            accepted = self._upload(self._pick_photo(), uuid.uuid4().hex)
        finally:
            SHARED.budget.settle(accepted)

    def _upload(self, photo: Photo, key: str) -> bool:
        deadline = time.monotonic() + UPLOAD_RETRY_SECONDS
        status = 0
        for attempt in range(1, UPLOAD_MAX_ATTEMPTS + 1):
            started = time.monotonic()
            retry_after = 0.0
            with self.client.post(
                "/v1/images",
                files={"file": (photo.name, photo.content, photo.content_type)},
                data={"tags": "load", "note": f"load:{key}"},
                headers=self._headers(**{"Idempotency-Key": key}),
                name="/v1/images",
                timeout=REQUEST_TIMEOUT_SECONDS,
                catch_response=True,
            ) as response:
                status = response.status_code
                if status == 202:
                    image_id = response.json()["id"]
                    self.pending.append(image_id)
                    SHARED.write(
                        "accepted",
                        key=key,
                        id=image_id,
                        user=self.phone,
                        photo=photo.name,
                        bytes=len(photo.content),
                        attempts=attempt,
                        request_ms=round((time.monotonic() - started) * 1000, 1),
                    )
                    return True
                response.failure(f"upload answered {status}")
                if status == 401:
                    self.sign_in()
                elif status == 429:
                    retry_after = float(response.headers.get("Retry-After", "1") or 1)
                elif status not in (0, 409) and status < 500:
                    SHARED.write("refused", key=key, status=status, body=response.text[:300])
                    return False
            if time.monotonic() > deadline:
                break
            gevent.sleep(max(min(retry_after, 10.0), min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)))  # noqa: S311
        SHARED.write("gave_up", key=key, status=status, attempts=attempt)
        return False

    @task(4)
    def poll(self) -> None:
        if not self.pending:
            return
        image_id = self.pending.pop(0)
        with self.client.get(
            f"/v1/images/{image_id}",
            headers=self._headers(),
            name="/v1/images/{id}",
            timeout=REQUEST_TIMEOUT_SECONDS,
            catch_response=True,
        ) as response:
            if response.status_code == 404:
                # Not in the history yet: the upload's event has not been applied.
                response.success()
                self.pending.append(image_id)
                return
            if response.status_code != 200:
                response.failure(f"answered {response.status_code}")
                self.pending.append(image_id)
                return
            image = response.json()
        if image["status"] not in ("done", "failed"):
            self.pending.append(image_id)
            return
        SHARED.write("final", id=image_id, status=image["status"], error=image.get("error"))
        if image["status"] == "done":
            if image.get("faces"):
                self.with_faces.append(image_id)
            if image.get("restored_url") and random.random() < DOWNLOAD_SHARE:  # noqa: S311
                self.client.get(image["restored_url"], name="/v1/files/{token}", timeout=REQUEST_TIMEOUT_SECONDS)
        if random.random() < DELETE_SHARE:  # noqa: S311
            self._delete(image_id)

    def _delete(self, image_id: str) -> None:
        with self.client.delete(
            f"/v1/images/{image_id}",
            headers=self._headers(),
            name="/v1/images/{id}",
            timeout=REQUEST_TIMEOUT_SECONDS,
            catch_response=True,
        ) as response:
            if response.status_code == 204:
                SHARED.write("deleted", id=image_id)
                if image_id in self.with_faces:
                    self.with_faces.remove(image_id)
            else:
                response.failure(f"delete answered {response.status_code}")

    @task(2)
    def list_history(self) -> None:
        self.client.get(
            "/v1/images?limit=20", headers=self._headers(), name="/v1/images", timeout=REQUEST_TIMEOUT_SECONDS
        )

    @task(1)
    def search(self) -> None:
        if not SHARED.search_available or not self.with_faces:
            return
        request: dict[str, Any]
        if random.random() < PHOTO_SEARCH_SHARE:  # noqa: S311
            photo = self._pick_photo()
            request = {"files": {"file": (photo.name, photo.content, photo.content_type)}, "data": {"top_k": "5"}}
        else:
            request = {"json": {"image_id": random.choice(self.with_faces), "face_index": 0, "top_k": 5}}  # noqa: S311
        with self.client.post(
            "/v1/search",
            headers=self._headers(),
            name="/v1/search",
            timeout=REQUEST_TIMEOUT_SECONDS,
            catch_response=True,
            **request,
        ) as response:
            # A face deleted meanwhile is a valid 404, a photo without a face a valid 422.
            if response.status_code in (200, 404, 422):
                response.success()
            else:
                response.failure(f"search answered {response.status_code}")
