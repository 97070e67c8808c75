"""Where the manager keeps a VM's saved state: <home>/savedstates/<uuid>.sav (0600; the format is
services/teleport/statefile.py's)."""

from __future__ import annotations

import os


def path_for(home: str, uuid: str) -> str:
    return os.path.join(home, "savedstates", f"{uuid}.sav")


def exists(home: str, uuid: str) -> bool:
    return os.path.exists(path_for(home, uuid))
