"""The manager's machine states: VirtualBox's names, the one transition table, and VmRun.move
refusing what the table does not allow."""

import json

import msgpack
import pytest

from services.manager.states import (
    LIVE,
    OFF,
    ON,
    TRANSITIONS,
    WATCHED,
    IllegalTransition,
    VmRun,
)
from services.manager.states import VmState as S


def test_states_are_virtualbox_names_and_travel_as_strings():
    assert {s.value for s in S} == {"PoweredOff", "Saved", "Aborted", "Starting", "Restoring", "TeleportingIn",
                                    "Running", "Paused", "Stopping", "Saving", "Teleporting"}
    assert json.dumps({"state": S.RUNNING}) == '{"state": "Running"}'
    assert msgpack.unpackb(msgpack.packb(S.PAUSED)) == "Paused"
    assert S("TeleportingIn") is S.TELEPORTING_IN


def test_every_state_has_its_moves_and_no_live_state_is_a_dead_end():
    assert set(TRANSITIONS) == set(S)
    assert LIVE == set(S) - set(OFF) and ON <= LIVE and WATCHED <= LIVE
    for state in OFF:          # a VM that holds no processes can only start (or drop its saved state)
        assert TRANSITIONS[state] <= {S.STARTING, S.POWERED_OFF}

    def reachable(start):
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    assert reachable(S.POWERED_OFF) == set(S)
    for state in LIVE:         # whatever happens, a live VM can still end: a process may always die
        assert S.ABORTED in TRANSITIONS[state] and S.POWERED_OFF in TRANSITIONS[state]


def test_move_follows_the_table():
    run = VmRun(uuid="u", name="vm")
    before = run.since
    run.move(S.STARTING)
    run.move(S.RUNNING)
    run.move(S.RUNNING)        # staying is no move
    assert run.state == S.RUNNING and run.live and run.since >= before
    with pytest.raises(IllegalTransition, match="Running -> Restoring"):
        run.move(S.RESTORING)
    run.move(S.SAVING)
    run.move(S.SAVED)
    assert not run.live
    with pytest.raises(IllegalTransition):
        run.move(S.RUNNING)    # a saved VM runs again only through a start
