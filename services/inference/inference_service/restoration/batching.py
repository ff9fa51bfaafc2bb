"""Batching across messages: faces that several messages submit within a short window are
restored in one forward pass (a GPU restores a batch of faces in about the time of one).
Each caller gets back exactly its own faces, in order. Faces asked for at different fidelity
weights are collected together but go through the network in one pass per weight (a forward
pass takes one weight for the whole batch)."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from inference_service.restoration.base import Restorer, check_fidelity

Request = tuple[list[np.ndarray], float | None, "Future[list[np.ndarray]]"]


class BatchingRestorer:
    def __init__(self, inner: Restorer, batch_size: int, window_seconds: float = 0.02) -> None:
        self._inner = inner
        self._batch_size = batch_size
        self._window = window_seconds
        self._requests: queue.Queue[Request] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="face-batcher", daemon=True)
        self._start_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    def restore(self, image_bgr: np.ndarray) -> np.ndarray:
        return self._inner.restore(image_bgr)

    def restore_faces(self, faces: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
        if fidelity is not None:
            fidelity = check_fidelity(fidelity)  # refused in the caller's thread, not the batch's
        if not faces:
            return []
        with self._start_lock:
            if not self._worker.is_alive():
                self._worker.start()
        result: Future[list[np.ndarray]] = Future()
        self._requests.put((faces, fidelity, result))
        return result.result()

    def _collect(self) -> list[Request]:
        """One request, plus whatever else arrives within the window, up to the batch size."""
        pending = [self._requests.get()]
        count = len(pending[0][0])
        deadline = time.monotonic() + self._window
        while count < self._batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._requests.get(timeout=remaining)
            except queue.Empty:
                break
            pending.append(request)
            count += len(request[0])
        return pending

    def _serve(self) -> None:
        while True:
            pending = self._collect()
            by_fidelity: dict[float | None, list[Request]] = {}
            for request in pending:
                by_fidelity.setdefault(request[1], []).append(request)
            for fidelity, group in by_fidelity.items():
                self._restore_group(group, fidelity)

    def _restore_group(self, group: list[Request], fidelity: float | None) -> None:
        faces = [face for request_faces, _, _ in group for face in request_faces]
        try:
            restored = self._inner.restore_faces(faces, fidelity)
        except BaseException as error:  # every waiting caller gets the failure
            for _, _, result in group:
                result.set_exception(error)
            return
        start = 0
        for request_faces, _, result in group:
            result.set_result(restored[start : start + len(request_faces)])
            start += len(request_faces)
