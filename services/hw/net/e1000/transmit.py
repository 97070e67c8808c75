"""The transmit ring: legacy, context and data descriptors read from guest memory, frames put
together with the checksum and segmentation offloads they ask for, status written back."""

from __future__ import annotations

import logging

from services.hw.net.checksum import Offload, apply_checksums, insert_checksum, segment

log = logging.getLogger("headbox.hw.e1000")

DESCRIPTOR = 16
MAX_PACKET = 65536 + 256       # a TSO packet's 64 KiB plus headers; more is the driver's error

# Command byte (bits 24-31 of the descriptor's second dword)
CMD_EOP, CMD_IFCS, CMD_IC, CMD_RS, CMD_DEXT, CMD_VLE = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
CMD_TSE = 0x04                 # in a data descriptor
TUCMD_TCP, TUCMD_IP, TUCMD_TSE = 0x01, 0x02, 0x04
DTYP_CONTEXT, DTYP_DATA = 0x0, 0x1
POPTS_IXSM, POPTS_TXSM = 0x01, 0x02
STATUS_DD = 0x01


class Transmitter:
    """State that lives across descriptors: the packet being assembled and the last context."""

    def __init__(self, fault=None):
        self.fault = fault or (lambda kind, message, *args: log.warning(message, *args))
        self.reset()

    def reset(self) -> None:
        self.packet = bytearray()
        self.offload = Offload()
        self.tso_context = False
        self.data_options = None        # (popts, tse, vlan) of the packet's first data descriptor
        self.legacy_checksum = None     # (css, cso) of a legacy packet
        self.vlan = None

    def process(self, descriptor: bytes, memory, vlan_enabled: bool, vet: int) -> tuple[list[bytes], bool]:
        """One descriptor: (frames completed by it, whether it asks for a status write-back)."""
        address = int.from_bytes(descriptor[0:8], "little")
        lower = int.from_bytes(descriptor[8:12], "little")
        upper = int.from_bytes(descriptor[12:16], "little")
        command = lower >> 24
        if command & CMD_DEXT:
            kind = (lower >> 20) & 0xF
            if kind == DTYP_CONTEXT:
                self._context(descriptor, lower)
                return [], bool(command & CMD_RS)
            if kind != DTYP_DATA:
                self.fault("descriptor type", "transmit descriptor of unknown type %d dropped", kind)
                return [], bool(command & CMD_RS)
            length = lower & 0xFFFFF
            if self.data_options is None:
                self.data_options = ((upper >> 8) & 0xFF, bool(command & CMD_TSE))
        else:
            length = lower & 0xFFFF
            if command & CMD_IC and self.legacy_checksum is None:
                self.legacy_checksum = ((upper >> 8) & 0xFF, (lower >> 16) & 0xFF)
        if command & CMD_VLE and self.vlan is None:
            self.vlan = upper >> 16
        if length:
            if len(self.packet) + length > MAX_PACKET:
                self.fault("oversized", "transmit packet over %d bytes dropped", MAX_PACKET)
                self._drop()
                return [], bool(command & CMD_RS)
            try:
                self.packet += memory.read(address, length)
            except ValueError:
                self.fault("buffer address", "transmit buffer at %#x+%d is not guest RAM: packet dropped",
                           address, length)
                self._drop()
                return [], bool(command & CMD_RS)
        frames = self._finish(vlan_enabled, vet) if command & CMD_EOP else []
        return frames, bool(command & CMD_RS)

    def _context(self, descriptor: bytes, lower: int) -> None:
        tucmd = lower >> 24
        self.offload = Offload(
            ip_start=descriptor[0], ip_offset=descriptor[1],
            ip_end=int.from_bytes(descriptor[2:4], "little"),
            l4_start=descriptor[4], l4_offset=descriptor[5],
            l4_end=int.from_bytes(descriptor[6:8], "little"),
            ipv4=bool(tucmd & TUCMD_IP), tcp=bool(tucmd & TUCMD_TCP),
            header_length=descriptor[13], mss=int.from_bytes(descriptor[14:16], "little"))
        self.tso_context = bool(tucmd & TUCMD_TSE)

    def _finish(self, vlan_enabled: bool, vet: int) -> list[bytes]:
        packet, options, legacy = self.packet, self.data_options, self.legacy_checksum
        vlan = self.vlan
        self._drop()
        if options is not None:
            popts, tse = options
            ip_sum, l4_sum = bool(popts & POPTS_IXSM), bool(popts & POPTS_TXSM)
            if tse and self.tso_context:
                frames = segment(bytes(packet), self.offload, ip_sum, l4_sum)
            else:
                apply_checksums(packet, self.offload, ip_sum, l4_sum)
                frames = [bytes(packet)]
        else:
            if legacy is not None:
                css, cso = legacy
                insert_checksum(packet, css, cso)
            frames = [bytes(packet)]
        if vlan is not None and vlan_enabled:
            tag = vet.to_bytes(2, "big") + vlan.to_bytes(2, "big")
            frames = [f[:12] + tag + f[12:] for f in frames]
        return [f for f in frames if len(f) >= 14]

    def _drop(self) -> None:
        self.packet = bytearray()
        self.data_options = None
        self.legacy_checksum = None
        self.vlan = None

    def snapshot(self) -> dict:
        o = self.offload
        return {"packet": bytes(self.packet), "tso": self.tso_context,
                "offload": [o.ip_start, o.ip_offset, o.ip_end, o.l4_start, o.l4_offset, o.l4_end,
                            o.ipv4, o.tcp, o.header_length, o.mss],
                "options": list(self.data_options) if self.data_options else None,
                "legacy": list(self.legacy_checksum) if self.legacy_checksum else None, "vlan": self.vlan}

    def restore(self, state: dict) -> None:
        self.packet = bytearray(state["packet"])
        self.tso_context = bool(state["tso"])
        self.offload = Offload(*state["offload"])
        self.data_options = tuple(state["options"]) if state["options"] else None
        self.legacy_checksum = tuple(state["legacy"]) if state["legacy"] else None
        self.vlan = state["vlan"]
