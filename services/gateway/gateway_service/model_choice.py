"""Which restorer an upload or a reprocess gets: the options a client asked for, checked against
the models live workers offer now (facerestore_common.model_registry). Never a silent substitute:
a model no worker can run is 409 `model-unavailable` naming it, an option the model lacks is 422
`option-unsupported`; `auto` picks the best model that can run with the options asked for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.exceptions import RedisError

from facerestore.events.v1 import events_pb2
from facerestore_common.logging import get_logger
from facerestore_common.model_registry import AUTO, ModelOffer, ModelUnavailable, resolve_model
from gateway_service.model_catalog import ModelCatalog
from gateway_service.problems import Problem

log = get_logger(__name__)


@dataclass(frozen=True)
class OptionsAsked:
    model: str = AUTO
    fidelity: float | None = None
    faces: Sequence[int] = ()
    upscale: int = 1


def unsupported(offer: ModelOffer, asked: OptionsAsked) -> str | None:
    """Why the model cannot honour the options, or None when it can."""
    if asked.fidelity is not None and not offer.supports_fidelity:
        return f"{offer.model_id} has no fidelity setting; leave fidelity out or choose a model that has one"
    if asked.upscale > offer.max_upscale:
        return f"{offer.model_id} upscales at most {offer.max_upscale}x"
    return None


def choose(asked: OptionsAsked, available: Mapping[str, ModelOffer]) -> events_pb2.RestorationOptions:
    """The options to publish, the model resolved; or the Problem to answer."""
    if asked.model == AUTO:
        # The first model in auto's order that can run with these options.
        fitting = {family: offer for family, offer in available.items() if unsupported(offer, asked) is None}
        candidates = fitting or available
    else:
        candidates = available
    try:
        family = resolve_model(asked.model, candidates)
    except ModelUnavailable as error:
        detail = (
            "no restoration model can run now; try again later"
            if error.model == AUTO
            else f"the model {error.model!r} cannot run here now (no worker has it); see GET /v1/models"
        )
        raise Problem(409, "model-unavailable", detail, model=error.model) from None
    reason = unsupported(available[family], asked)
    if reason is not None:
        raise Problem(422, "option-unsupported", reason, model=family)
    options = events_pb2.RestorationOptions(model=family, faces=sorted(set(asked.faces)), upscale=asked.upscale)
    if asked.fidelity is not None:
        options.fidelity = asked.fidelity
    return options


async def live_models(models: ModelCatalog) -> dict[str, ModelOffer]:
    try:
        return await models.available()
    except RedisError as error:
        log.error("model_registry_unreachable", error=repr(error))
        raise Problem(
            503, "service-unavailable", "which models can run is unknown right now; try again shortly"
        ) from None


async def resolved(models: ModelCatalog, asked: OptionsAsked) -> events_pb2.RestorationOptions:
    return choose(asked, await live_models(models))
