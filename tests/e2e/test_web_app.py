"""The web client in a real browser: Debian's chromium, driven by Playwright, against the running
platform. A person signs in with the code from the SMS outbox, uploads a face, watches it being
restored, compares before and after, searches for similar faces and deletes the photo; an admin
reads the statistics, bans a user and removes an image with a reason. Screenshots of every page
are kept in build/screenshots/ (the README's come from there)."""

from __future__ import annotations

import io
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright
from skimage import data as skimage_data

from tests.conftest import face_photo
from tests.stack_harness import Mailbox, RunningStack, random_mobile

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RESTORE_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert (ROOT / "web" / "dist" / "index.html").exists(), "the web app is not built: run `make web`"
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `apt-get install chromium`"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Debian's build, by its path: Playwright's own browser download is not used.
    browser = playwright.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()


class Watched:
    """A page with what went wrong in it: script errors and Content-Security-Policy violations."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(message.text)


@pytest.fixture
def watched(browser: Browser, stack: RunningStack) -> Iterator[Watched]:
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 1100, "height": 820}, locale="en-GB")
    watched = Watched(context.new_page())
    yield watched
    context.close()
    assert watched.problems == []


def shot(page: Page, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def unlabelled_controls(page: Page) -> list[str]:
    """Form controls a screen reader could not name."""
    return page.evaluate(
        """() => [...document.querySelectorAll('main input, main select, main textarea')]
            .filter((el) => el.type !== 'hidden' && !el.closest('[hidden]'))
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map((el) => el.outerHTML)"""
    )


def images_loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        """(selector) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
        }""",
        arg=selector,
    )


def sign_in(page: Page, stack: RunningStack, phone: str) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Mobile number").fill(phone)
    page.get_by_role("button", name="Send code").click()
    # Sent: the SMS is in the outbox (an earlier code to the same number would be spent).
    expect(page.get_by_role("status").filter(has_text="We sent a code")).to_be_visible()
    page.get_by_label("6-digit code").fill(stack.latest_code(phone))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def astronaut(tmp_path: Path, degraded: bool) -> Path:
    """NASA's portrait of Eileen Collins (public domain, shipped with scikit-image): the README's
    screenshots show it. Degraded: downscaled and coarsely compressed, so restoring it shows."""
    picture = Image.fromarray(skimage_data.astronaut())
    if degraded:
        picture = picture.resize((180, 180), Image.Resampling.BILINEAR).resize((512, 512), Image.Resampling.BICUBIC)
    path = tmp_path / ("astronaut-blurred.jpg" if degraded else "astronaut.jpg")
    picture.save(path, "JPEG", quality=35 if degraded else 90)
    return path


def api_tokens(client: httpx.Client, stack: RunningStack, phone: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.sign_in(client, phone)['access_token']}"}


def upload_by_api(client: httpx.Client, headers: dict[str, str], tags: str, photo_path: Path | None = None) -> str:
    photo = ("face.jpg", (photo_path or face_photo("t1.jpg")).read_bytes(), "image/jpeg")
    response = client.post("/v1/images", headers=headers, files={"file": photo}, data={"tags": tags})
    assert response.status_code == 202, response.text
    image_id: str = response.json()["id"]
    deadline = time.monotonic() + RESTORE_TIMEOUT_MS / 1000
    while client.get(f"/v1/images/{image_id}", headers=headers).json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "not restored in time"
        time.sleep(0.3)
    return image_id


def wait_for_version_to_finish(
    client: httpx.Client, headers: dict[str, str], image_id: str, restoration_id: str
) -> None:
    deadline = time.monotonic() + RESTORE_TIMEOUT_MS / 1000
    while True:
        versions = client.get(f"/v1/images/{image_id}", headers=headers).json()["restorations"]
        if {version["id"]: version["status"] for version in versions}.get(restoration_id) in ("done", "failed"):
            return
        assert time.monotonic() < deadline, f"{restoration_id} not finished in time"
        time.sleep(0.3)


def admin_usage_totals(client: httpx.Client, admin_headers: dict[str, str]) -> dict[str, int]:
    response = client.get("/v1/admin/stats", headers=admin_headers)
    assert response.status_code == 200, response.text
    totals: dict[str, int] = response.json()["usage"]["totals"]
    return totals


def test_a_person_uploads_compares_searches_and_deletes(
    watched: Watched, stack: RunningStack, client: httpx.Client, tmp_path: Path
) -> None:
    page = watched.page
    answer = page.goto("/")
    assert answer is not None
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "sign-in")

    phone = random_mobile()
    page.get_by_label("Mobile number").fill(phone)
    page.get_by_role("button", name="Send code").click()
    expect(page.get_by_role("status").filter(has_text="We sent a code")).to_be_visible()
    page.get_by_label("6-digit code").fill(stack.latest_code(phone))
    shot(page, "sign-in-code")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Restore a photo")).to_be_visible()
    # An earlier photo of the same person, for the search below.
    earlier = upload_by_api(client, api_tokens(client, stack, phone), "nasa", astronaut(tmp_path, degraded=False))

    assert unlabelled_controls(page) == []
    page.get_by_label("Photo").set_input_files(str(astronaut(tmp_path, degraded=True)))
    expect(page.get_by_role("img", name="Preview of astronaut-blurred.jpg")).to_be_visible()
    page.get_by_label("Tags (optional)").fill("family, web")
    page.get_by_label("Location (optional)").fill("Houston")
    shot(page, "upload")
    # The progress bar's values as they change: the upload reports its bytes.
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const bar = document.querySelector('progress');
            new MutationObserver(() => window.progressSeen.push(bar.value)).observe(bar, { attributes: true });
        }"""
    )
    page.get_by_role("button", name="Upload and restore").click()

    status = page.locator(".status-line")
    expect(status).to_have_text("Restored", timeout=RESTORE_TIMEOUT_MS)
    assert page.evaluate("window.progressSeen")[-1] == 100
    image_id = page.url.rsplit("/", 1)[1].split("?")[0]
    images_loaded(page, ".compare img")
    expect(page.get_by_role("img", name="Before: the original photo")).to_be_visible()
    quality = page.locator("ul.quality li")
    expect(quality.filter(has_text="1 face was restored.")).to_have_count(1)
    expect(quality.filter(has_text="looks like the same person")).to_have_count(1)
    expect(quality.filter(has_text="sharp")).to_have_count(1)
    shot(page, "before-after", full_page=True)

    # The slider moves the line with the keyboard: Home shows all of "after", End all of "before".
    slider = page.get_by_label("Compare before and after")
    after = page.locator(".compare img.after")
    assert after.evaluate("img => img.style.clipPath") == "inset(0px 0px 0px 50%)"
    slider.focus()
    page.keyboard.press("Home")
    assert after.evaluate("img => img.style.clipPath") == "inset(0px 0px 0px 0%)"
    page.keyboard.press("End")
    assert after.evaluate("img => img.style.clipPath") == "inset(0px 0px 0px 100%)"
    assert slider.get_attribute("aria-valuetext") == "100% before, 0% after"

    # Tags, note and location are edited in place; the result is rated.
    page.get_by_label("Tags", exact=True).fill("family, web, lake")
    page.get_by_label("Note", exact=True).fill("Launch day")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Saved.", exact=True)).to_be_visible()
    expect(page.locator("dl.details")).to_contain_text("family, web, lake")
    expect(page.locator("dl.details")).to_contain_text("Launch day")
    page.get_by_label("5: Excellent").check()
    page.get_by_role("button", name="Send my rating").click()
    expect(page.get_by_text("Thank you: you rated it 5 of 5.")).to_be_visible()
    assert unlabelled_controls(page) == []
    headers = api_tokens(client, stack, phone)
    stored = client.get(f"/v1/images/{image_id}", headers=headers).json()
    assert stored["tags"] == ["family", "web", "lake"] and stored["note"] == "Launch day"
    assert stored["feedback"]["rating"] == 5

    # Similar faces, starting from this photo's face: the earlier photo of the same person.
    page.get_by_role("link", name="Search for faces like these").click()
    expect(page.get_by_role("heading", name="Find similar faces")).to_be_visible()
    matches = page.locator("ol.grid li")
    expect(matches.first).to_contain_text("% similar")
    found = matches.evaluate_all("cards => cards.map(c => [c.dataset.image, Number(c.dataset.score)])")
    assert {image for image, _ in found} == {earlier}
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True) and 0.9 < scores[0] <= 1.0
    assert unlabelled_controls(page) == []
    images_loaded(page, "ol.grid img")
    shot(page, "search", full_page=True)

    # A filter that leaves nothing: a tag the earlier photo does not have.
    page.get_by_label("Tags", exact=True).fill("holiday")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No matches")).to_be_visible()

    page.get_by_role("link", name="Your photos").click()
    card = page.locator(f'li.card[data-id="{image_id}"]')
    expect(card).to_have_attribute("data-status", "done")
    expect(card).to_contain_text("family, web, lake")
    expect(page.locator("ul.grid li.card")).to_have_count(2)
    images_loaded(page, "ul.grid img")
    shot(page, "history")

    card.get_by_role("link").click()
    expect(status).to_have_text("Restored")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete photo").click()
    expect(page.get_by_role("heading", name="Your photos")).to_be_visible()
    expect(page.locator(f'li.card[data-id="{image_id}"]')).to_have_count(0)
    expect(page.locator(f'li.card[data-id="{earlier}"]')).to_have_count(1)


def test_files_are_checked_before_anything_is_sent(watched: Watched, stack: RunningStack) -> None:
    page = watched.page
    sign_in(page, stack, random_mobile())
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    photo = page.get_by_label("Photo")

    photo.set_input_files({"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"just some text, no photo"})
    expect(page.get_by_role("alert")).to_have_text('"notes.jpg" is not a JPEG or PNG photo.')
    expect(photo).to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Upload and restore").click()

    big = b"\xff\xd8\xff\xe0" + bytes(1024 * 1024 + 10)
    photo.set_input_files({"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": big})
    expect(page.get_by_role("alert")).to_contain_text("photos can be at most 1 MB")
    page.get_by_role("button", name="Upload and restore").click()
    shot(page, "upload-refused")
    assert not [url for url in sent if url.endswith("/v1/images")]


def test_sign_in_by_keyboard_with_errors_in_words_and_a_resend_countdown(watched: Watched, stack: RunningStack) -> None:
    page = watched.page
    page.goto("/#/sign-in")
    # The skip link comes first and takes the keyboard to the page's content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    number = page.get_by_label("Mobile number")
    number.focus()
    page.keyboard.type("12")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("doesn't look like a mobile number")
    expect(number).to_be_focused()

    phone = random_mobile()
    number.fill(phone)
    page.keyboard.press("Enter")
    code = page.get_by_label("6-digit code")
    expect(code).to_be_focused()
    page.keyboard.type("000000")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("That code is wrong")

    # Five codes an hour per number: the first went out above, four more, then the limit.
    resend = page.get_by_role("button", name="Send a new code")
    for _ in range(4):
        resend.click()
        expect(page.get_by_role("status").filter(has_text="A new code is on its way")).to_be_visible()
    resend.click()
    expect(page.get_by_role("alert")).to_contain_text("Too many attempts. You can try again in")
    countdown = page.get_by_role("button", name="Send a new code (in")
    expect(countdown).to_be_disabled()
    assert "minute" in (countdown.text_content() or "")
    shot(page, "sign-in-limited")

    code.fill(stack.latest_code(phone))
    code.press("Enter")
    expect(page.get_by_role("heading", name="Restore a photo")).to_be_visible()


def test_tokens_live_in_memory_and_survive_a_reload_of_this_tab_only(
    watched: Watched, browser: Browser, stack: RunningStack
) -> None:
    page = watched.page
    sign_in(page, stack, random_mobile())
    # While the page is open nothing is stored: both tokens are in memory.
    assert page.evaluate("[sessionStorage.length, localStorage.length, document.cookie]") == [0, 0, ""]

    page.reload()
    expect(page.get_by_role("heading", name="Restore a photo")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    # Another tab (another browsing context) has no session of its own.
    other = browser.new_context(base_url=stack.base_url).new_page()
    other.goto("/#/history")
    expect(other.get_by_role("heading", name="Sign in")).to_be_visible()
    other.context.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.reload()
    page.goto("/#/history")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_an_admin_reads_statistics_bans_a_user_and_removes_an_image(
    watched: Watched, stack: RunningStack, client: httpx.Client
) -> None:
    offender = random_mobile()
    offender_headers = api_tokens(client, stack, offender)
    offender_id = client.get("/v1/me", headers=offender_headers).json()["id"]
    image_id = upload_by_api(client, offender_headers, "admin-test")
    # The owner asks for a second version: the statistics count it as a version requested.
    admin_headers = api_tokens(client, stack, stack.admin_sign_in_phone())
    requested_before = admin_usage_totals(client, admin_headers)["restorations_requested"]
    second = client.post(f"/v1/images/{image_id}/restorations", headers=offender_headers, json={"model": "classical"})
    assert second.status_code == 202, second.text
    wait_for_version_to_finish(client, offender_headers, image_id, second.json()["id"])
    deadline = time.monotonic() + 30
    while admin_usage_totals(client, admin_headers)["restorations_requested"] != requested_before + 1:
        assert time.monotonic() < deadline, "the version requested was not counted"
        time.sleep(0.3)

    page = watched.page
    sign_in(page, stack, stack.admin_sign_in_phone())
    page.get_by_role("link", name="Statistics").click()
    expect(page.get_by_role("heading", name="Statistics")).to_be_visible()
    stats = client.get("/v1/admin/stats", headers=admin_headers).json()
    figures = page.locator("dl.figures")
    expect(figures).to_contain_text("Users")
    expect(figures).to_contain_text("Mean sharpness gain")
    chart = page.get_by_role("img", name="Images by status")
    expect(chart).to_be_visible()
    done_row = page.locator('table.compact tr[data-status="done"]')
    assert int(done_row.locator("td").text_content() or "0") >= 1
    assert stats["images_by_status"]["done"] >= 1
    expect(page.get_by_role("img", name="Uploads per day")).to_be_visible()
    # The usage table has a column of versions requested, per day and in all over the period.
    usage = page.get_by_role("table", name="Usage per day (UTC)")
    expect(usage.locator("tfoot tr")).to_have_count(1)
    column = usage.locator("thead th").all_text_contents().index("Versions requested")
    totals = usage.locator("tfoot tr > *").all_text_contents()
    assert totals[0] == "Total"
    assert int(totals[column]) == stats["usage"]["totals"]["restorations_requested"] == requested_before + 1
    per_day = [int(row.locator("th, td").nth(column).text_content() or "") for row in usage.locator("tbody tr").all()]
    assert per_day == [bucket["restorations_requested"] for bucket in stats["usage"]["series"]]
    assert per_day[-1] >= 1  # today's
    restorers = page.get_by_role("table", name="Restoration models")
    expect(restorers.get_by_role("rowheader")).not_to_have_count(0)
    expect(page.get_by_role("table", name="Queues")).to_contain_text("inference")
    shot(page, "admin-stats", full_page=True)

    # The owner reported the result; the admin hides it from the moderation queue.
    reported = client.post(f"/v1/images/{image_id}/report", headers=offender_headers, json={"reason": "wrong-person"})
    assert reported.status_code == 204, reported.text
    page.get_by_role("link", name="Moderation").click()
    case = page.locator(f'li.case[data-id="{image_id}"]')
    expect(case).to_contain_text("1 report (looks like someone else: 1)")
    case.get_by_label(f"Reason for the decision on image {image_id}").fill("not the same person")
    images_loaded(page, f'li.case[data-id="{image_id}"] img')
    shot(page, "admin-moderation")
    case.get_by_role("button", name="Hide").click()
    page.get_by_label("Show", exact=True).select_option("all")
    expect(page.locator(f'li.case[data-id="{image_id}"]')).to_have_attribute("data-hidden", "true")

    page.get_by_role("link", name="Users", exact=True).click()
    # The suite's stack has more users than one page holds: the admin finds the offender by number.
    page.get_by_label("Phone number").fill(f"{offender[:3]} {offender[3:6]} {offender[6:]}")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("table", name="All users").locator("tbody tr")).to_have_count(1)
    row = page.locator("tr", has=page.get_by_role("rowheader", name=offender))
    expect(row).to_contain_text("Active")
    row.get_by_label(f"Reason for banning {offender}").fill("spam uploads")
    shot(page, "admin-users")
    row.get_by_role("button", name=f"Ban {offender}").click()
    # The row is drawn anew from the answer.
    expect(page.locator("tr", has=page.get_by_role("rowheader", name=offender))).to_contain_text("Banned")
    assert client.get("/v1/me", headers=offender_headers).status_code == 401
    page.get_by_role("link", name=offender).click()
    expect(page.get_by_role("heading", name=f"User {offender}")).to_be_visible()
    expect(page.locator("dl.details")).to_contain_text("Banned")
    expect(page.locator("tbody tr").first).to_be_visible()

    page.get_by_role("link", name="All images").click()
    page.get_by_label("Only the images of user (id)").fill(offender_id)
    page.get_by_role("button", name="Show their images").click()
    card = page.locator(f'li.card[data-id="{image_id}"]')
    expect(card).to_be_visible()
    images_loaded(page, f'li.card[data-id="{image_id}"] img')
    shot(page, "admin-images")
    card.get_by_label("Reason for deleting this image").fill("not a face photo")
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    expect(card).to_have_count(0)
    admin = api_tokens(client, stack, stack.admin_sign_in_phone())
    remaining = client.get("/v1/admin/images", headers=admin, params={"user_id": offender_id})
    assert image_id not in {item["id"] for item in remaining.json()["items"]}

    # Each decision is in the audit log, with its reason.
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Target").fill(image_id)
    page.get_by_role("button", name="Filter").click()
    # Other tests' decisions share this stack's audit log: wait until only this image's rows show.
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.locator('tr[data-action="image.hide"]')).to_contain_text("not the same person")
    expect(page.locator('tr[data-action="image.delete"]')).to_contain_text("not a face photo")
    page.get_by_label("Target").fill(offender_id)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator('tr[data-action="user.ban"]')).to_have_count(1)
    expect(page.locator('tr[data-action="user.ban"]')).to_contain_text("spam uploads")
    shot(page, "admin-audit")


def test_a_person_exports_deletes_everything_and_erases_the_account(
    watched: Watched, stack: RunningStack, client: httpx.Client, tmp_path: Path
) -> None:
    phone = random_mobile()
    headers = api_tokens(client, stack, phone)
    upload_by_api(client, headers, "export", astronaut(tmp_path, degraded=False))
    page = watched.page
    sign_in(page, stack, phone)

    page.get_by_role("link", name="Your data").click()
    page.get_by_role("button", name="Export all my photos as a ZIP").click()
    download = page.get_by_role("link", name="Download the ZIP")
    expect(download).to_be_visible(timeout=60_000)
    shot(page, "your-data")
    archive = page.request.get(download.get_attribute("href") or "")
    assert archive.status == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.body())) as exported:
        assert any(name.lower().endswith((".jpg", ".jpeg", ".png")) for name in exported.namelist())

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete all my photos").click()
    expect(page.get_by_text("1 photo was deleted.")).to_be_visible()
    assert client.get("/v1/images", headers=headers).json()["items"] == []

    page.once("dialog", lambda dialog: dialog.accept("erase"))
    page.get_by_role("button", name="Erase my account").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Your account is being erased.")).to_be_visible()
    assert client.get("/v1/me", headers=headers).status_code == 401


def test_a_person_adds_an_email_address_and_signs_in_with_it(
    watched: Watched, stack: RunningStack, mailbox: Mailbox
) -> None:
    page = watched.page
    sign_in(page, stack, random_mobile())
    address = f"{random_mobile()[1:]}@example.org"
    page.get_by_role("link", name="Your data").click()
    page.get_by_label("Email address", exact=True).fill(address)
    page.get_by_role("button", name="Send a confirmation code").click()
    expect(page.get_by_text(f"We emailed a code to {address}.")).to_be_visible()
    page.get_by_label("Code from the email").fill(mailbox.latest_code(address))
    page.get_by_role("button", name="Confirm the address").click()
    expect(page.get_by_text(f"Confirmed: you can now sign in with a code sent to {address}.")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in with email instead").click()
    page.get_by_label("Email address", exact=True).fill(address)
    sent_before = mailbox.count_to(address)
    page.get_by_role("button", name="Send code").click()
    expect(page.get_by_role("status").filter(has_text=f"If {address} belongs to an account")).to_be_visible()
    deadline = time.monotonic() + 10
    while mailbox.count_to(address) == sent_before:
        assert time.monotonic() < deadline, "no second email"
        time.sleep(0.1)
    page.get_by_label("6-digit code").fill(mailbox.latest_code(address))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
