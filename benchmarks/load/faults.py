"""The faults of a chaos run, on a schedule that is printed before the run starts.

Each fault is done to the run's own processes (benchmarks/load/rig.py), never to the
machine's shared RabbitMQ or Redis: SIGKILL of an inference worker (brought back after a
pause, as a cluster would), `rabbitmqctl stop_app` ... `start_app` of the private node,
a restart of the private Redis (it keeps nothing on disk, so everything in it is gone),
restarts of the MongoDB and S3 stand-ins, and restarts of the upload and history services."""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.load.rig import Rig


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load started
    kind: str
    target: str
    down_seconds: float

    def describe(self) -> str:
        return f"t+{self.at:5.0f} s  {self.action()}"

    def action(self) -> str:
        return {
            "kill": f"SIGKILL {self.target}, start it again {self.down_seconds:g} s later",
            "broker": f"RabbitMQ stop_app, start_app {self.down_seconds:g} s later",
            "redis": f"Redis stopped (its data gone), started again {self.down_seconds:g} s later",
            "restart": f"restart {self.target} (SIGTERM, started again {self.down_seconds:g} s later)",
        }[self.kind]


@dataclass
class FaultRecord:
    fault: Fault
    started: float  # epoch seconds
    ended: float
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self.fault),
            "label": self.label,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
        }

    @property
    def label(self) -> str:
        names = {
            "kill": f"SIGKILL {self.fault.target}",
            "broker": "RabbitMQ stop_app/start_app",
            "redis": "Redis restart",
        }
        return names.get(self.fault.kind, f"restart {self.fault.target}")


def full_schedule(workers: list[str]) -> list[Fault]:
    """Every kind of fault, one after the other while the uploads go on (about 3 minutes)."""
    return [
        Fault(15, "kill", workers[0], 3),
        Fault(35, "broker", "rabbitmq", 10),
        Fault(60, "redis", "redis", 3),
        Fault(80, "restart", "mongo", 3),
        Fault(100, "restart", "s3", 3),
        Fault(120, "restart", "upload", 1),
        Fault(135, "restart", "history", 1),
        Fault(150, "kill", workers[-1], 3),
    ]


def short_schedule(workers: list[str]) -> list[Fault]:
    """Two faults for the test inside `make test`: a worker killed, then a broker outage."""
    return [Fault(8, "kill", workers[-1], 2), Fault(20, "broker", "rabbitmq", 5)]


SCHEDULES = {"full": full_schedule, "short": short_schedule}


def inject(rig: Rig, fault: Fault) -> FaultRecord:
    started = time.time()
    try:
        if fault.kind == "kill":
            rig.restart_process(fault.target, signal.SIGKILL, fault.down_seconds)
        elif fault.kind == "broker":
            rig.outage_rabbitmq(fault.down_seconds)
        elif fault.kind == "redis":
            rig.restart_redis(fault.down_seconds)
        elif fault.kind == "restart":
            rig.restart_process(fault.target, signal.SIGTERM, fault.down_seconds)
        else:
            raise ValueError(f"unknown fault {fault.kind}")
    except Exception as error:  # recorded and reported: the run goes on and reconciles what it can
        return FaultRecord(fault, started, time.time(), f"{type(error).__name__}: {error}")
    return FaultRecord(fault, started, time.time())
