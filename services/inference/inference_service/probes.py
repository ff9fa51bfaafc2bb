"""The worker's HTTP probes, served on its metrics port next to /metrics and answered from
the metrics server's own threads, so that they can tell when the worker's event loop is stuck.

/healthz (liveness: a restart would help): the event loop turned within
LIVENESS_MAX_LOOP_STALL_SECONDS, no message has been in hand longer than
LIVENESS_MAX_MESSAGE_HOLD_SECONDS, and while the broker connection is up every consumer's
channel is open. A broker outage alone does not fail it: the connection recovers by itself.
Until start-up is over (models loading) it answers ok; the startup probe is in charge then.

/readyz (readiness and startup: should it get work): models loaded, connected to the broker,
and every role's consumer taking messages."""

from __future__ import annotations

from typing import Protocol

from facerestore_common.health import LoopHeartbeat
from facerestore_common.metrics_server import Probe, ProbeResult


class Consumer(Protocol):
    def is_connected(self) -> bool: ...

    def is_consuming(self) -> bool: ...

    def oldest_held_seconds(self) -> float: ...


class WorkerProbes:
    def __init__(
        self, heartbeat: LoopHeartbeat, max_loop_stall_seconds: float, max_message_hold_seconds: float
    ) -> None:
        self._heartbeat = heartbeat
        self._max_stall = max_loop_stall_seconds
        self._max_hold = max_message_hold_seconds
        self._consumers: dict[str, Consumer] = {}
        self._started = False

    def add(self, role: str, consumer: Consumer) -> None:
        self._consumers[role] = consumer

    def started(self) -> None:
        """Models are loaded and every role's consumer is registered."""
        self._started = True

    def liveness(self) -> ProbeResult:
        if not self._started:
            return True, {"checks": {"starting": True}}
        stall = self._heartbeat.age_seconds()
        consumers = list(self._consumers.values())
        held = max((consumer.oldest_held_seconds() for consumer in consumers), default=0.0)
        checks = {
            "event_loop": stall <= self._max_stall,
            "messages_held": held <= self._max_hold,
            "consumer_channels": all(consumer.is_consuming() or not consumer.is_connected() for consumer in consumers),
        }
        details = {"loop_stall_seconds": round(stall, 2), "oldest_message_held_seconds": round(held, 2)}
        return all(checks.values()), {"checks": checks, **details}

    def readiness(self) -> ProbeResult:
        consumers = self._consumers.values()
        checks = {
            "models_loaded": self._started,
            "broker_connected": bool(consumers) and all(consumer.is_connected() for consumer in consumers),
            "consuming": bool(consumers) and all(consumer.is_consuming() for consumer in consumers),
        }
        return all(checks.values()), {"checks": checks, "roles": sorted(self._consumers)}

    def endpoints(self) -> dict[str, Probe]:
        return {"/healthz": self.liveness, "/readyz": self.readiness}
