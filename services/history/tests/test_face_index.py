"""Both face index adapters against the same behaviour: embedded Qdrant Edge in the test's
folder, and the Qdrant server adapter through qdrant-client's local mode (the same client API
the server speaks). Vectors are clustered like faces: identities with noisy samples."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from history_service.face_index import EngineTuning, FaceIndex, IndexedFace, SearchFilters
from history_service.face_index.edge import EdgeFaceIndex
from history_service.face_index.server import QdrantServerFaceIndex

# Local mode warns that it ignores payload indexes and search parameters: it searches exactly.
pytestmark = pytest.mark.filterwarnings("ignore:.*(Payload indexes|Local mode).*:UserWarning")

DLIB = "dlib-resnet-v1"
ARCFACE = "insightface-buffalo_l-w600k_r50"
DAY_MS = 86_400_000
BASE_MS = 1_700_000_000_000


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def identities(count: int, dimension: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([unit(v) for v in rng.normal(size=(count, dimension))])


def sample(centre: np.ndarray, seed: int, noise: float = 0.15) -> list[float]:
    """Another photo of the same person: the identity plus a little noise."""
    rng = np.random.default_rng(seed)
    return unit(centre + noise * rng.normal(size=centre.shape) / np.sqrt(centre.size)).tolist()


def face(
    image_id: str,
    vector: list[float],
    *,
    user: str = "alice",
    index: int = 0,
    model: str = DLIB,
    created_at_ms: int = BASE_MS,
    location: str = "",
    tags: tuple[str, ...] = (),
) -> IndexedFace:
    return IndexedFace(
        image_id=image_id,
        face_index=index,
        user_id=user,
        model=model,
        vector=vector,
        created_at_ms=created_at_ms,
        location=location,
        tags=tags,
        box=(10 * index, 20, 10 * index + 50, 80),
    )


OpenIndex = Callable[..., Awaitable[FaceIndex]]


@pytest.fixture(params=["edge", "server"])
async def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenIndex]:
    """open_index(tuning=...) -> an open index of the parametrised kind; closed at the end."""
    opened: list[FaceIndex] = []
    client = AsyncQdrantClient(location=":memory:")

    async def open_(tuning: EngineTuning | None = None) -> FaceIndex:
        tuning = tuning or EngineTuning()
        index: FaceIndex
        if request.param == "edge":
            index = EdgeFaceIndex(tmp_path / "face-index", "faces", tuning, background_optimize=False)
        else:
            index = QdrantServerFaceIndex(client, "faces", tuning)
        await index.open()
        opened.append(index)
        return index

    yield open_
    for index in opened:
        if isinstance(index, EdgeFaceIndex):
            await index.close()
    await client.close()


@pytest.fixture
async def index(open_index: OpenIndex) -> FaceIndex:
    return await open_index()


async def test_a_new_photo_of_a_person_finds_that_persons_faces_first_with_cosine_scores(index: FaceIndex) -> None:
    people = identities(20, 128, seed=1)
    for person in range(20):
        for shot in range(3):
            await index.replace_image(f"p{person}-s{shot}", [face(f"p{person}-s{shot}", sample(people[person], shot))])

    hits = await index.search(sample(people[7], 99), DLIB, 5, SearchFilters(), "alice")

    assert {hit.image_id for hit in hits[:3]} == {"p7-s0", "p7-s1", "p7-s2"}
    assert not any(hit.image_id.startswith("p7-") for hit in hits[3:])
    scores = [hit.cosine for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0].cosine > 0.9 and hits[3].cosine < 0.5
    assert hits[0].box == (0, 20, 50, 80) and hits[0].user_id == "alice"


async def test_the_same_vector_scores_a_cosine_of_one(index: FaceIndex) -> None:
    vector = identities(1, 128, seed=2)[0].tolist()
    await index.replace_image("img", [face("img", vector)])

    (hit,) = await index.search(vector, DLIB, 3, SearchFilters(), None)

    assert hit.cosine == pytest.approx(1.0, abs=1e-5)


async def test_redelivered_faces_replace_themselves_instead_of_duplicating(index: FaceIndex) -> None:
    people = identities(2, 128, seed=3)
    faces = [face("img", sample(people[i], i), index=i) for i in range(2)]
    for _ in range(3):
        await index.replace_image("img", faces)

    assert await index.count() == 2
    hits = await index.search(people[0].tolist(), DLIB, 10, SearchFilters(), "alice")
    assert sorted((hit.image_id, hit.face_index) for hit in hits) == [("img", 0), ("img", 1)]


async def test_replacing_an_images_faces_drops_the_ones_it_no_longer_has(index: FaceIndex) -> None:
    people = identities(3, 128, seed=4)
    await index.replace_image("img", [face("img", sample(people[i], i), index=i) for i in range(3)])

    await index.replace_image("img", [face("img", sample(people[0], 0), index=0)])

    hits = await index.search(people[2].tolist(), DLIB, 10, SearchFilters(), None)
    assert [(hit.image_id, hit.face_index) for hit in hits] == [("img", 0)]


async def test_models_are_never_compared_and_a_re_embedded_image_leaves_its_old_model(index: FaceIndex) -> None:
    small, large = identities(1, 128, seed=5)[0], identities(1, 512, seed=6)[0]
    await index.replace_image("old", [face("old", small.tolist())])
    await index.replace_image("new", [face("new", large.tolist(), model=ARCFACE)])

    assert [h.image_id for h in await index.search(small.tolist(), DLIB, 10, SearchFilters(), None)] == ["old"]
    assert [h.image_id for h in await index.search(large.tolist(), ARCFACE, 10, SearchFilters(), None)] == ["new"]
    assert await index.search(small.tolist(), "an-unknown-model", 10, SearchFilters(), None) == []

    # Re-embedded with the new model: the image is found in its collection only.
    await index.replace_image("old", [face("old", sample(large, 1), model=ARCFACE)])

    assert await index.search(small.tolist(), DLIB, 10, SearchFilters(), None) == []
    assert {h.image_id for h in await index.search(large.tolist(), ARCFACE, 10, SearchFilters(), None)} == {
        "old",
        "new",
    }
    assert (await index.count(DLIB), await index.count(ARCFACE), await index.count()) == (0, 2, 2)


async def test_a_user_sees_only_their_own_faces_and_no_user_means_everyones(index: FaceIndex) -> None:
    person = identities(1, 128, seed=7)[0]
    await index.replace_image("alice-img", [face("alice-img", sample(person, 1), user="alice")])
    await index.replace_image("bob-img", [face("bob-img", sample(person, 2), user="bob")])

    assert [h.image_id for h in await index.search(person.tolist(), DLIB, 10, SearchFilters(), "alice")] == [
        "alice-img"
    ]
    assert [h.image_id for h in await index.search(person.tolist(), DLIB, 10, SearchFilters(), "bob")] == ["bob-img"]
    everyone = await index.search(person.tolist(), DLIB, 10, SearchFilters(), None)
    assert {(h.image_id, h.user_id) for h in everyone} == {("alice-img", "alice"), ("bob-img", "bob")}


async def test_filters_keep_only_matching_dates_locations_and_any_of_the_tags(index: FaceIndex) -> None:
    person = identities(1, 128, seed=8)[0]
    specs = {
        "jan-oslo-family": (BASE_MS, "Oslo", ("family",)),
        "feb-oslo-work": (BASE_MS + 31 * DAY_MS, "Oslo", ("work",)),
        "mar-rome-family-trip": (BASE_MS + 60 * DAY_MS, "Rome", ("family", "trip")),
        "apr-none": (BASE_MS + 90 * DAY_MS, "", ()),
    }
    for n, (image_id, (created, location, tags)) in enumerate(specs.items()):
        await index.replace_image(
            image_id, [face(image_id, sample(person, n), created_at_ms=created, location=location, tags=tags)]
        )

    async def found(filters: SearchFilters) -> set[str]:
        return {hit.image_id for hit in await index.search(person.tolist(), DLIB, 10, filters, "alice")}

    assert await found(SearchFilters()) == set(specs)
    assert await found(SearchFilters(location="Oslo")) == {"jan-oslo-family", "feb-oslo-work"}
    assert await found(SearchFilters(tags=("family",))) == {"jan-oslo-family", "mar-rome-family-trip"}
    assert await found(SearchFilters(tags=("work", "trip"))) == {"feb-oslo-work", "mar-rome-family-trip"}
    # Inclusive bounds, to the millisecond.
    feb, mar = BASE_MS + 31 * DAY_MS, BASE_MS + 60 * DAY_MS
    assert await found(SearchFilters(created_from_ms=feb, created_to_ms=mar)) == {
        "feb-oslo-work",
        "mar-rome-family-trip",
    }
    assert await found(SearchFilters(created_from_ms=feb + 1)) == {"mar-rome-family-trip", "apr-none"}
    assert await found(SearchFilters(created_to_ms=feb - 1)) == {"jan-oslo-family"}
    assert await found(SearchFilters(created_from_ms=feb, location="Oslo", tags=("work",))) == {"feb-oslo-work"}
    assert await found(SearchFilters(location="Paris")) == set()


async def test_min_cosine_and_exclusions_leave_faces_out(index: FaceIndex) -> None:
    people = identities(2, 128, seed=9)
    await index.replace_image("same", [face("same", sample(people[0], 1))])
    await index.replace_image("other", [face("other", people[1].tolist())])
    await index.replace_image("query", [face("query", people[0].tolist())])

    hits = await index.search(people[0].tolist(), DLIB, 10, SearchFilters(), None, min_cosine=0.8)
    assert {hit.image_id for hit in hits} == {"query", "same"}
    hits = await index.search(people[0].tolist(), DLIB, 10, SearchFilters(), None, exclude=[("query", 0)])
    assert [hit.image_id for hit in hits] == ["same", "other"]


async def test_deleting_an_image_or_a_user_removes_their_faces_from_every_model(index: FaceIndex) -> None:
    small, large = identities(1, 128, seed=10)[0], identities(1, 512, seed=11)[0]
    await index.replace_image("a1", [face("a1", small.tolist(), user="alice")])
    await index.replace_image("a2", [face("a2", large.tolist(), user="alice", model=ARCFACE)])
    await index.replace_image(
        "b1", [face("b1", sample(small, 1), user="bob"), face("b1", sample(small, 2), user="bob", index=1)]
    )

    await index.delete_image("b1")
    await index.delete_image("b1")  # again: nothing left to remove, no error
    assert {h.image_id for h in await index.search(small.tolist(), DLIB, 10, SearchFilters(), None)} == {"a1"}

    await index.replace_image("b2", [face("b2", sample(small, 3), user="bob")])
    await index.delete_user("alice")

    assert [h.image_id for h in await index.search(small.tolist(), DLIB, 10, SearchFilters(), None)] == ["b2"]
    assert await index.search(large.tolist(), ARCFACE, 10, SearchFilters(), None) == []
    assert await index.count() == 1


async def test_upsert_writes_many_images_and_drop_all_empties_the_index(index: FaceIndex) -> None:
    people = identities(50, 128, seed=12)
    await index.upsert([face(f"img-{i}", people[i].tolist(), user=f"user-{i % 5}") for i in range(50)])

    assert await index.count() == 50
    hits = await index.search(people[33].tolist(), DLIB, 1, SearchFilters(), "user-3")
    assert [hit.image_id for hit in hits] == ["img-33"]

    await index.drop_all()

    assert await index.count() == 0
    assert await index.search(people[33].tolist(), DLIB, 1, SearchFilters(), None) == []
    await index.upsert([face("again", people[0].tolist())])
    assert await index.count() == 1


async def test_optimized_index_answers_the_same_as_before(open_index: OpenIndex) -> None:
    # A tiny indexing threshold makes the engine build its HNSW graph for these few points.
    index = await open_index(EngineTuning(indexing_threshold_kb=1, full_scan_threshold_kb=1))
    people = identities(40, 128, seed=13)
    faces = [face(f"p{p}-s{s}", sample(people[p], s), user=f"u{p % 4}") for p in range(40) for s in range(5)]
    await index.upsert(faces)
    queries = [(sample(people[p], 100 + p), f"u{p % 4}") for p in range(0, 40, 3)]
    before = [await index.search(q, DLIB, 5, SearchFilters(), user) for q, user in queries]

    await index.optimize()

    after = [await index.search(q, DLIB, 5, SearchFilters(), user) for q, user in queries]
    assert [[h.image_id for h in hits] for hits in after] == [[h.image_id for h in hits] for hits in before]
    assert [[round(h.cosine, 4) for h in hits] for hits in after] == [
        [round(h.cosine, 4) for h in hits] for hits in before
    ]


# --- the embedded engine: persistence, one process, its own optimizer -----------------------------


async def test_the_embedded_index_persists_and_reopens_with_its_models(tmp_path: Path) -> None:
    small, large = identities(1, 128, seed=14)[0], identities(1, 512, seed=15)[0]
    index = EdgeFaceIndex(tmp_path / "idx", background_optimize=False)
    await index.open()
    await index.replace_image("a", [face("a", small.tolist(), tags=("family",), location="Oslo")])
    await index.replace_image("b", [face("b", large.tolist(), model=ARCFACE)])
    await index.close()

    reopened = EdgeFaceIndex(tmp_path / "idx", background_optimize=False)
    await reopened.open()
    try:
        assert reopened.models() == sorted([DLIB, ARCFACE])
        assert await reopened.count() == 2
        hits = await reopened.search(small.tolist(), DLIB, 5, SearchFilters(location="Oslo", tags=("family",)), "alice")
        assert [(h.image_id, round(h.cosine, 4)) for h in hits] == [("a", 1.0)]
    finally:
        await reopened.close()


async def test_a_second_process_cannot_open_the_embedded_index_while_it_is_in_use(tmp_path: Path) -> None:
    index = EdgeFaceIndex(tmp_path / "idx", background_optimize=False)
    await index.open()
    await index.replace_image("a", [face("a", identities(1, 128, seed=16)[0].tolist())])
    script = (
        "import asyncio, sys\n"
        "from history_service.face_index import FaceIndexBusy\n"
        "from history_service.face_index.edge import EdgeFaceIndex\n"
        "try:\n"
        f"    asyncio.run(EdgeFaceIndex({str(tmp_path / 'idx')!r}, background_optimize=False).open())\n"
        "except FaceIndexBusy as error:\n"
        "    print('busy:', error)\n"
        "    sys.exit(3)\n"
    )
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
    finally:
        await index.close()
    assert process.returncode == 3, err.decode()
    assert b"open in another process" in out


def optimizing_index(
    path: Path, quiet_seconds: float, check_seconds: float, clock: Callable[[], float] = time.monotonic
) -> EdgeFaceIndex:
    """An embedded index whose background optimizer indexes once 100 faces wait and writes pause."""
    tuning = EngineTuning(
        indexing_threshold_kb=1,
        optimize_unindexed_points=100,
        optimize_quiet_seconds=quiet_seconds,
        optimize_check_seconds=check_seconds,
    )
    return EdgeFaceIndex(path, tuning=tuning, clock=clock)


class SteppedClock:
    """A monotonic clock that moves only when the test moves it, and counts its readings so
    that the test can wait for the background optimizer's next look at it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.now

    async def next_reading(self, within: float = 30.0) -> None:
        """Wait until the clock is read again: by the optimizer, while the test leaves the index alone."""
        seen = self.readings
        deadline = time.monotonic() + within
        while self.readings == seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"the optimizer did not look at the clock within {within} s")
            await asyncio.sleep(0.005)


async def add_people(index: EdgeFaceIndex, count: int, seed: int) -> np.ndarray:
    """`count` identities, one face each (image "img-<i>"), upserted in one batch."""
    people = identities(count, 128, seed=seed)
    await index.upsert([face(f"img-{i}", people[i].tolist()) for i in range(count)])
    return people


def indexed(index: EdgeFaceIndex) -> int:
    """How many of the shard's vectors the optimizer has indexed."""
    return int(index._shards["faces-" + DLIB].shard.info().indexed_vectors_count)


async def indexed_after_waiting(index: EdgeFaceIndex, count: int, seconds: float = 10.0) -> int:
    """indexed(index) once it reaches `count`, or when `seconds` have passed."""
    for _ in range(int(seconds / 0.1)):
        if indexed(index) >= count:
            break
        await asyncio.sleep(0.1)
    return indexed(index)


async def test_background_optimizer_indexes_new_faces_once_writes_pause(tmp_path: Path) -> None:
    index = optimizing_index(tmp_path / "idx", quiet_seconds=0.2, check_seconds=0.1)
    await index.open()
    try:
        people = await add_people(index, 150, seed=17)
        assert indexed(index) == 0

        assert await indexed_after_waiting(index, 150) >= 150
        hits = await index.search(people[42].tolist(), DLIB, 1, SearchFilters(), "alice")
        assert [hit.image_id for hit in hits] == ["img-42"]
    finally:
        await index.close()


async def test_too_few_new_faces_do_not_trigger_an_optimize(tmp_path: Path) -> None:
    index = optimizing_index(tmp_path / "idx", quiet_seconds=0.0, check_seconds=0.05)
    await index.open()
    try:
        await add_people(index, 60, seed=18)
        await asyncio.sleep(0.5)
        assert indexed(index) == 0
    finally:
        await index.close()


async def test_changed_tuning_applies_when_the_embedded_index_reopens(tmp_path: Path) -> None:
    people = identities(30, 128, seed=19)
    index = EdgeFaceIndex(tmp_path / "idx", background_optimize=False)
    await index.open()
    await index.upsert([face(f"img-{i}", people[i].tolist()) for i in range(30)])
    await index.close()

    tuned = replace(EngineTuning(), m=8, ef_construct=64, quantization="int8", indexing_threshold_kb=1)
    reopened = EdgeFaceIndex(tmp_path / "idx", tuning=tuned, background_optimize=False)
    await reopened.open()
    try:
        await reopened.optimize()
        config = (tmp_path / "idx" / f"faces-{DLIB}" / "edge_config.json").read_text()
        assert '"m":8' in config and '"ef_construct":64' in config and "int8" in config
        hits = await reopened.search(people[5].tolist(), DLIB, 1, SearchFilters(), None)
        assert [hit.image_id for hit in hits] == ["img-5"]
    finally:
        await reopened.close()


async def test_searches_postpone_the_background_optimize_until_the_index_is_idle(tmp_path: Path) -> None:
    # Idle time is measured on a clock the test moves, so a busy machine stalling the test
    # between two searches cannot pass for an idle index.
    clock = SteppedClock()
    index = optimizing_index(tmp_path / "idx", quiet_seconds=0.3, check_seconds=0.01, clock=clock)
    await index.open()
    try:
        people = await add_people(index, 150, seed=20)
        for i in range(10):  # a search every 0.2 s: never idle for 0.3 s, though 2 s pass after the writes
            clock.now += 0.2
            await clock.next_reading()  # the optimizer has looked, 0.2 s after the last search
            await index.search(people[i].tolist(), DLIB, 1, SearchFilters(), "alice")
        assert indexed(index) == 0

        clock.now += 0.3
        assert await indexed_after_waiting(index, 150) >= 150
    finally:
        await index.close()
