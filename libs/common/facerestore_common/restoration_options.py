"""How a user asked for an image to be restored (RestorationOptions on the bus): the limits
of each option, their check, and the plain form they are stored in (upload's job records,
history's versions). The gateway answers a bad request with 422 before it gets here; the
upload service checks again before it records and publishes anything."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import InvalidArgument
from facerestore_common.topology import RESTORER_FAMILIES

UPSCALES = (1, 2)
# Face indexes name faces in the order an image lists them; no photo of 1 MB holds more.
MAX_FACE_INDEX = 999
MAX_CHOSEN_FACES = 100
REASON = "validation-error"


def checked(options: events_pb2.RestorationOptions) -> events_pb2.RestorationOptions:
    """A normalised copy (faces sorted without repeats, upscale 0 read as 1), or InvalidArgument."""
    if options.model not in RESTORER_FAMILIES:
        raise InvalidArgument(
            f"options.model must be one of {', '.join(RESTORER_FAMILIES)} (resolved, never auto)", reason=REASON
        )
    if options.HasField("fidelity") and not 0.0 <= options.fidelity <= 1.0:
        raise InvalidArgument("fidelity is 0 to 1", reason=REASON)
    if len(options.faces) > MAX_CHOSEN_FACES or any(not 0 <= face <= MAX_FACE_INDEX for face in options.faces):
        raise InvalidArgument(f"faces are up to {MAX_CHOSEN_FACES} indexes from 0 to {MAX_FACE_INDEX}", reason=REASON)
    upscale = options.upscale or 1
    if upscale not in UPSCALES:
        raise InvalidArgument("upscale is 1 or 2", reason=REASON)
    normalised = events_pb2.RestorationOptions(model=options.model, faces=sorted(set(options.faces)), upscale=upscale)
    if options.HasField("fidelity"):
        normalised.fidelity = options.fidelity
    return normalised


def to_document(options: events_pb2.RestorationOptions) -> dict[str, Any]:
    return {
        "model": options.model,
        "fidelity": options.fidelity if options.HasField("fidelity") else None,
        "faces": [int(face) for face in options.faces],
        "upscale": options.upscale or 1,
    }


def from_document(document: Mapping[str, Any] | None) -> events_pb2.RestorationOptions:
    """The options of a stored document; empty ones (model "") for records made before options existed."""
    document = document or {}
    options = events_pb2.RestorationOptions(
        model=str(document.get("model", "")),
        faces=[int(face) for face in document.get("faces", [])],
        upscale=int(document.get("upscale") or 1),
    )
    if document.get("fidelity") is not None:
        options.fidelity = float(document["fidelity"])
    return options
