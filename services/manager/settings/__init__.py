"""The manager's settings store: VMs, media and global settings in VirtualBox-shaped XML files
under the settings home, changed one locked transaction at a time."""

from .api import Settings

__all__ = ["Settings"]
