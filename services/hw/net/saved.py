"""What a card checks when it restores a saved or teleported state: the same chip, or the guest's
driver would drive registers that are not there. A different MAC address is allowed, as VirtualBox
allows it (two VMs made for a teleport get different ones): the guest keeps the saved address in
the card's registers until its driver resets the card."""

from __future__ import annotations

import logging


def check_saved_card(state: dict, chip: str, mac: bytes, log: logging.Logger) -> None:
    if state.get("chip") != chip:
        raise ValueError(f"the saved network card is a {state.get('chip')}, not this VM's {chip}")
    saved = bytes(state.get("mac", b""))
    if saved != mac:
        log.info("the saved %s had MAC address %s and this VM's has %s: the guest keeps the saved "
                 "one until it resets the card", chip, saved.hex(":"), mac.hex(":"))
