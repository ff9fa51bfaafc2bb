"""Faces of several messages restored in one pass, each caller getting its own back."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from inference_service.restoration.batching import BatchingRestorer
from inference_service.restoration.classical import ClassicalRestorer


class RecordingRestorer(ClassicalRestorer):
    """The real classical restorer, recording the batches it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def restore_faces(self, faces: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
        self.batches.append(len(faces))
        return super().restore_faces(faces, fidelity)


def crops(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (512, 512, 3), dtype=np.uint8) for _ in range(count)]


def submit_together(batcher: BatchingRestorer, requests: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    barrier = threading.Barrier(len(requests))
    results: list[list[np.ndarray]] = [[] for _ in requests]

    def call(index: int) -> None:
        barrier.wait()
        results[index] = batcher.restore_faces(requests[index])

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_faces_of_concurrent_messages_share_one_forward_pass() -> None:
    inner = RecordingRestorer()
    batcher = BatchingRestorer(inner, batch_size=4, window_seconds=0.5)
    first, second = crops(1, seed=1), crops(2, seed=2)

    results = submit_together(batcher, [first, second])

    assert inner.batches == [3]
    reference = ClassicalRestorer()
    for request, result in zip([first, second], results, strict=True):
        assert len(result) == len(request)
        for crop, restored in zip(request, result, strict=True):
            np.testing.assert_array_equal(restored, reference.restore(crop))


def test_a_full_batch_is_not_held_back_for_others() -> None:
    inner = RecordingRestorer()
    batcher = BatchingRestorer(inner, batch_size=2, window_seconds=5.0)
    assert len(batcher.restore_faces(crops(2, seed=3))) == 2
    assert inner.batches == [2]


def test_a_failure_reaches_every_waiting_caller() -> None:
    class Failing(ClassicalRestorer):
        def restore_faces(self, faces: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
            raise RuntimeError("device lost")

    batcher = BatchingRestorer(Failing(), batch_size=4, window_seconds=0.01)
    with pytest.raises(RuntimeError, match="device lost"):
        batcher.restore_faces(crops(1, seed=4))
    assert batcher.restore_faces([]) == []


class FidelityStamp(ClassicalRestorer):
    """Stands in for a network with a fidelity dial: each face comes back filled with its
    fidelity in percent, so a caller can tell which weight its faces went through."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, float | None]] = []

    def restore_faces(self, faces: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
        self.batches.append((len(faces), fidelity))
        value = 255 if fidelity is None else round(fidelity * 100)
        return [np.full_like(face, value) for face in faces]


def test_faces_at_different_fidelities_go_through_one_pass_per_fidelity() -> None:
    inner = FidelityStamp()
    batcher = BatchingRestorer(inner, batch_size=8, window_seconds=0.5)
    requests = [(crops(1, seed=5), 0.2), (crops(2, seed=6), 0.8), (crops(2, seed=7), 0.2), (crops(1, seed=8), None)]
    barrier = threading.Barrier(len(requests))
    results: list[list[np.ndarray]] = [[] for _ in requests]

    def call(index: int) -> None:
        faces, fidelity = requests[index]
        barrier.wait()
        results[index] = batcher.restore_faces(faces, fidelity)

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(inner.batches, key=str) == sorted([(3, 0.2), (2, 0.8), (1, None)], key=str)
    for (faces, fidelity), result in zip(requests, results, strict=True):
        assert len(result) == len(faces)
        expected = 255 if fidelity is None else round(fidelity * 100)
        assert all((face == expected).all() for face in result)


@pytest.mark.parametrize("fidelity", [-0.1, 1.5, float("nan")])
def test_a_fidelity_outside_zero_to_one_is_refused_before_batching(fidelity: float) -> None:
    inner = FidelityStamp()
    batcher = BatchingRestorer(inner, batch_size=4, window_seconds=0.01)
    with pytest.raises(ValueError, match="fidelity"):
        batcher.restore_faces(crops(1, seed=9), fidelity)
    assert inner.batches == []
