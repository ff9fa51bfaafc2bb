"""Restoration options as the upload service checks and stores them: resolved models only,
fidelity 0..1, face indexes without repeats, upscale 1 or 2; stored and read back unchanged."""

from __future__ import annotations

import pytest

from facerestore.events.v1 import events_pb2
from facerestore_common import restoration_options
from facerestore_common.errors import InvalidArgument


def test_checked_options_are_normalised() -> None:
    asked = events_pb2.RestorationOptions(model="codeformer", fidelity=0.0, faces=[3, 0, 3, 1], upscale=0)

    options = restoration_options.checked(asked)

    assert options.model == "codeformer"
    assert options.HasField("fidelity") and options.fidelity == 0.0
    assert list(options.faces) == [0, 1, 3]
    assert options.upscale == 1


def test_fidelity_left_out_stays_unset() -> None:
    options = restoration_options.checked(events_pb2.RestorationOptions(model="gfpgan", upscale=2))

    assert not options.HasField("fidelity")
    assert options.upscale == 2


@pytest.mark.parametrize(
    "asked",
    [
        events_pb2.RestorationOptions(model="auto"),
        events_pb2.RestorationOptions(model=""),
        events_pb2.RestorationOptions(model="GFPGAN"),
        events_pb2.RestorationOptions(model="codeformer", fidelity=1.01),
        events_pb2.RestorationOptions(model="codeformer", fidelity=-0.1),
        events_pb2.RestorationOptions(model="classical", faces=[-1]),
        events_pb2.RestorationOptions(model="classical", faces=[1000]),
        events_pb2.RestorationOptions(model="classical", faces=list(range(101))),
        events_pb2.RestorationOptions(model="classical", upscale=3),
        events_pb2.RestorationOptions(model="classical", upscale=-1),
    ],
)
def test_options_out_of_bounds_are_refused(asked: events_pb2.RestorationOptions) -> None:
    with pytest.raises(InvalidArgument) as refused:
        restoration_options.checked(asked)

    assert refused.value.reason == "validation-error"


def test_stored_options_read_back_the_same() -> None:
    with_fidelity = events_pb2.RestorationOptions(model="codeformer", fidelity=0.7, faces=[0, 2], upscale=2)
    without = events_pb2.RestorationOptions(model="classical", upscale=1)

    for options in (with_fidelity, without):
        document = restoration_options.to_document(options)
        assert restoration_options.from_document(document) == options
    assert restoration_options.to_document(without) == {
        "model": "classical",
        "fidelity": None,
        "faces": [],
        "upscale": 1,
    }


def test_records_from_before_options_read_as_no_model() -> None:
    options = restoration_options.from_document(None)

    assert options.model == ""
    assert options.upscale == 1
    assert not options.HasField("fidelity")
