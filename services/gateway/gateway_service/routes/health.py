"""Probes: /healthz says the process is up; /readyz says its dependencies answer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway_service.dependencies import Clients

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every service and Redis answer")
async def readyz(request: Request, clients: Clients) -> JSONResponse:
    checks = await clients.health()
    try:
        checks["redis"] = bool(await request.app.state.redis.ping())
    except Exception:
        checks["redis"] = False
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not-ready", "checks": checks}, status_code=200 if ready else 503
    )
