"""Client SDKs generated from the running platform's own OpenAPI document, as a client developer
makes them: openapi-python-client and openapi-typescript must produce them without one warning,
and a client app's flow must work through the generated Python client alone: sign in with the
code from the SMS outbox, upload, poll until restored, list, search, download, refresh, a refused
upload read as a problem, log out."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from tests.conftest import face_photo
from tests.stack_harness import RunningStack, random_mobile

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    """sdk/generate.py, the script `make web` runs, as a module."""
    spec = importlib.util.spec_from_file_location("sdk_generate", ROOT / "sdk" / "generate.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator


GENERATOR = _load_generator()
PYTHON_PACKAGE: str = GENERATOR.PYTHON_PACKAGE


@pytest.fixture(scope="module")
def live_document(stack: RunningStack) -> str:
    return f"{stack.base_url}/openapi.json"


@pytest.fixture(scope="module")
def sdk(live_document: str) -> Iterator[ModuleType]:
    """The Python client, generated into build/sdk/python from the live document (fails on any warning)."""
    folder = str(GENERATOR.generate_python(live_document, GENERATOR.PYTHON_OUT))
    sys.path.insert(0, folder)
    importlib.invalidate_caches()
    for name in [name for name in sys.modules if name.split(".")[0] == PYTHON_PACKAGE]:
        del sys.modules[name]
    try:
        yield importlib.import_module(PYTHON_PACKAGE)
    finally:
        sys.path.remove(folder)


def module(name: str) -> Any:
    return importlib.import_module(f"{PYTHON_PACKAGE}.{name}")


def test_the_live_document_is_the_one_the_web_app_was_built_from(live_document: str, tmp_path: Path) -> None:
    # The web app's TypeScript client comes from the document the gateway package writes (make web);
    # the one the running gateway serves must give the very same types, without a warning.
    built = GENERATOR.TYPESCRIPT_OUT
    assert built.exists(), "run `make web` first"
    fresh = GENERATOR.generate_typescript(live_document, tmp_path / "schema.d.ts")
    assert fresh.read_text() == built.read_text()
    assert httpx.get(live_document).json() == json.loads(GENERATOR.DOCUMENT.read_text())


def test_a_client_app_flow_through_the_generated_python_client(
    sdk: ModuleType, stack: RunningStack, tmp_path: Path
) -> None:
    models = module("models")
    auth = {name: module(f"api.auth.{name}") for name in ("request_code", "verify_code", "refresh_token", "logout")}
    images = {name: module(f"api.images.{name}") for name in ("upload_image", "get_image", "list_images")}
    download_file = module("api.images.download_file")
    search_faces = module("api.search.search_faces")
    get_me = module("api.auth.get_me")
    file_type = module("types").File

    anonymous = sdk.Client(base_url=stack.base_url, timeout=httpx.Timeout(30.0))
    phone = random_mobile()
    sent = auth["request_code"].sync_detailed(client=anonymous, body=models.OtpRequest(phone=phone))
    assert sent.status_code == 202 and sent.parsed.phone == phone

    wrong = auth["verify_code"].sync_detailed(client=anonymous, body=models.OtpVerify(phone=phone, code="000000"))
    assert wrong.status_code == 401
    assert isinstance(wrong.parsed, models.ProblemDetails) and wrong.parsed.type_.endswith("/invalid-code")

    tokens = auth["verify_code"].sync(
        client=anonymous, body=models.OtpVerify(phone=phone, code=stack.latest_code(phone))
    )
    assert isinstance(tokens, models.TokenResponse) and tokens.expires_in > 0
    client = sdk.AuthenticatedClient(base_url=stack.base_url, token=tokens.access_token, timeout=httpx.Timeout(30.0))
    me = get_me.sync(client=client)
    assert isinstance(me, models.UserOut) and me.phone == phone

    photo = face_photo("t1.jpg").read_bytes()
    form = models.UploadImageForm(
        file=file_type(payload=io.BytesIO(photo), file_name="face.jpg", mime_type="image/jpeg"), tags="sdk, python"
    )
    queued = images["upload_image"].sync_detailed(client=client, body=form)
    assert queued.status_code == 202, queued.content
    assert isinstance(queued.parsed, models.ImageOut) and queued.parsed.tags == ["sdk", "python"]
    image_id = queued.parsed.id

    deadline = time.monotonic() + 90
    # The history lists an upload when its event arrives, moments after the 202: until then 404.
    image = images["get_image"].sync(client=client, image_id=image_id)
    while not isinstance(image, models.ImageOut) or image.status.value not in ("done", "failed"):
        assert time.monotonic() < deadline, f"not restored in time: {image}"
        time.sleep(0.3)
        image = images["get_image"].sync(client=client, image_id=image_id)
    assert image.status.value == "done" and image.faces == 6
    assert image.quality.sharpness_after > 0

    page = images["list_images"].sync(client=client, limit=10)
    assert [item.id for item in page.items] == [image_id]

    found = search_faces.sync(client=client, body=models.SearchByFace(image_id=image_id, face_index=0, top_k=3))
    assert isinstance(found, models.SearchResult) and len(found.matches) == 3
    assert all(match.image_id == image_id and 0.0 < match.score <= 1.0 for match in found.matches)

    # The links in an image name the download operation's token.
    restored = download_file.sync(client=anonymous, token=image.restored_url.rsplit("/", 1)[1])
    assert isinstance(restored, file_type)
    picture = PILImage.open(io.BytesIO(restored.payload.read()))
    assert picture.format == "JPEG" and picture.size == (image.width, image.height)

    text = file_type(payload=io.BytesIO(b"not a photo at all"), file_name="notes.txt", mime_type="text/plain")
    refused = images["upload_image"].sync_detailed(client=client, body=models.UploadImageForm(file=text))
    assert refused.status_code == 415
    assert isinstance(refused.parsed, models.ProblemDetails)
    assert refused.parsed.type_.endswith("/unsupported-media-type") and refused.parsed.status == 415

    fresh = auth["refresh_token"].sync(client=anonymous, body=models.RefreshRequest(refresh_token=tokens.refresh_token))
    assert isinstance(fresh, models.TokenResponse) and fresh.refresh_token != tokens.refresh_token
    client = sdk.AuthenticatedClient(base_url=stack.base_url, token=fresh.access_token, timeout=httpx.Timeout(30.0))
    assert auth["logout"].sync_detailed(client=client).status_code == 204
    ended = get_me.sync_detailed(client=client)
    assert ended.status_code == 401 and isinstance(ended.parsed, models.ProblemDetails)
