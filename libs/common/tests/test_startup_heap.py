"""The start-up heap is frozen while serving and given back to the collector after: what start-up
built is out of the collector's sight, garbage made while serving is still collected, and nothing
stays frozen once serving ends."""

from __future__ import annotations

import gc
import weakref

from facerestore_common.startup_heap import frozen_startup_heap


class Node:
    def __init__(self) -> None:
        self.self_ref = self


def test_what_start_up_built_is_frozen_while_serving_and_released_after() -> None:
    built_at_start_up = Node()
    with frozen_startup_heap():
        assert gc.get_freeze_count() > 0
        # A cycle made while serving is collected as before.
        made_while_serving = Node()
        gone = weakref.ref(made_while_serving)
        del made_while_serving
        gc.collect()
        assert gone() is None
        # One built before is frozen: dropped, it waits for the collector until serving ends.
        kept = weakref.ref(built_at_start_up)
        del built_at_start_up
        gc.collect()
        assert kept() is not None
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert kept() is None
