"""A PCI function whose device lives in the device process: configuration reads are answered
here from a replica (no round trip), writes update the replica and travel to the device too."""

from __future__ import annotations


class RemotePciFunction:
    """Wraps the replica (a PciFunction built exactly as the device process builds it)."""

    def __init__(self, replica, device: int, function: int, remote):
        self.replica = replica
        self.device, self.function = device, function
        self.remote = remote          # RemoteBus: pci_config_write(device, function, offset, size, value)

    def config_read(self, offset: int, size: int) -> int:
        return self.replica.config_read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.replica.config_write(offset, size, value)
        self.remote.pci_config_write(self.device, self.function, offset, size, value)

    def reset(self) -> None:
        self.replica.reset()

    def snapshot(self) -> dict:
        return self.replica.snapshot()

    def restore(self, state: dict) -> None:
        self.replica.restore(state)

    def __getattr__(self, name):
        return getattr(self.replica, name)
