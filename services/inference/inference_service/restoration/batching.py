"""Batching across messages: faces that several messages submit within a short window are
restored in one forward pass (a GPU restores a batch of faces in about the time of one).
Each caller gets back exactly its own faces, in order."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from inference_service.restoration.base import Restorer

Request = tuple[list[np.ndarray], "Future[list[np.ndarray]]"]


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

    def restore_faces(self, faces: list[np.ndarray]) -> list[np.ndarray]:
        if not faces:
            return []
        with self._start_lock:
            if not self._worker.is_alive():
                self._worker.start()
        result: Future[list[np.ndarray]] = Future()
        self._requests.put((faces, result))
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
            faces = [face for request_faces, _ in pending for face in request_faces]
            try:
                restored = self._inner.restore_faces(faces)
            except BaseException as error:  # every waiting caller gets the failure
                for _, result in pending:
                    result.set_exception(error)
                continue
            start = 0
            for request_faces, result in pending:
                result.set_result(restored[start : start + len(request_faces)])
                start += len(request_faces)
