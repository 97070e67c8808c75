"""QEMU's "std VGA" (PCI 1234:1111): VGA registers on ports 0x3B0-0x3DF, the Bochs DISPI interface,
the legacy memory window, and VRAM that the VMM also maps into guest-physical space as the LFB."""

from __future__ import annotations

from typing import Callable

from services.hw.display import dispi as dispi_regs
from services.hw.display.dac import Dac
from services.hw.display.dispi import Dispi
from services.hw.display.mode import DisplayMode, decode
from services.hw.display.window import BASE as WINDOW_BASE
from services.hw.display.window import SIZE as WINDOW_SIZE
from services.hw.display.window import LegacyWindow

PORT_BASE, PORT_COUNT = 0x3B0, 0x30           # 0x3B0-0x3DF: mono aliases, shared ports, colour ports
DEFAULT_VRAM_SIZE = 16 << 20

# Bits a register actually has: the rest read back as 0, as on IBM's VGA.
_SR_BITS = (0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0x00, 0x00, 0x00)
_GR_BITS = (0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF, 0, 0, 0, 0, 0, 0, 0)
_AR_COUNT = 0x15
_AR_BITS = (0x3F,) * 16 + (0xEF, 0xFF, 0x3F, 0x0F, 0x0F)

ST01_RETRACE = 0x09     # display-disabled and vertical-retrace: toggled on every read of 0x3DA
AR_PALETTE_SOURCE = 0x20
SR1_SCREEN_OFF = 0x20


def _vram_buffer(vram):
    buf = getattr(vram, "buf", vram)
    view = memoryview(buf)
    if view.readonly or view.nbytes < 1 << 18 or view.nbytes % (1 << 16):
        raise ValueError("VRAM must be a writable buffer of at least 256 KiB in 64 KiB blocks")
    return buf, view.cast("B")


class StdVga:
    """The VGA core: sequencer, graphics controller, CRTC, attribute controller, DAC and misc
    registers, reached through `read`/`write` at ports 0x3B0-0x3DF (base-relative offsets).

    `vram` is a writable buffer (a SharedRegion or anything with the buffer protocol). `dispi` and
    `window` are the other two devices of the card; `attach(bus)` registers all three.
    `on_mode_change(mode)` is called with a DisplayMode whenever `mode()` finds the displayed mode
    different from the last one reported: at once when DISPI switches a VBE mode, and for legacy
    modes the next time somebody asks (the display loop does, every frame), so the dozens of register
    writes of a BIOS mode set produce one report, not dozens."""

    name = "vga"

    def __init__(self, vram, *, on_mode_change: Callable[[DisplayMode], None] | None = None):
        self.vram, self.vram_bytes = _vram_buffer(vram)
        self.vram_words = self.vram_bytes.cast("I")
        self.vram_size = self.vram_bytes.nbytes
        self.on_mode_change = on_mode_change
        self.dac = Dac()
        self.dispi = Dispi(self.vram_size, on_enable=self._dispi_enabled, on_change=self.mode)
        self.window = LegacyWindow(self)
        self._reported: DisplayMode | None = None
        self.reset()

    def reset(self) -> None:
        self.sr = bytearray(8)
        self.gr = bytearray(16)
        self.cr = bytearray(256)
        self.ar = bytearray(_AR_COUNT)
        self.sr_index = self.gr_index = self.cr_index = self.ar_index = 0
        self.ar_flip_flop = 0
        self.misc = 0x01               # colour addressing, so 0x3D4/0x3DA answer before the BIOS runs
        self.feature = 0
        self.st00 = 0
        self.st01 = 0
        self.dac.reset()
        self.dispi.reset()
        self.window.reset()

    # -- wiring ------------------------------------------------------------------------------------
    def attach(self, bus) -> None:
        """Register the card on `bus`: ports 0x3B0-0x3DF ("vga"), 0x1CE-0x1CF ("vga-dispi") and MMIO
        0xA0000-0xBFFFF ("vga-window"). The LFB is not a bus range: the VMM maps VRAM itself."""
        bus.register(self, "pio", PORT_BASE, PORT_COUNT, name=self.name)
        bus.register(self.dispi, "pio", dispi_regs.INDEX_PORT, 2, name=self.dispi.name)
        bus.register(self.window, "mmio", WINDOW_BASE, WINDOW_SIZE, name=self.window.name)

    def pci_function(self, **callbacks):
        """The PCI function of this card; see services.hw.display.pci.StdVgaPci."""
        from services.hw.display.pci import StdVgaPci
        return StdVgaPci(self, **callbacks)

    # -- what is on screen ---------------------------------------------------------------------------
    def mode(self) -> DisplayMode:
        """The displayed mode; reports it to `on_mode_change` if it differs from the last report."""
        current = decode(self)
        if current != self._reported:
            self._reported = current
            if self.on_mode_change is not None:
                self.on_mode_change(current)
        return current

    @property
    def blanked(self) -> bool:
        """True while the guest has the screen off (palette source cleared or sequencer screen-off);
        a VBE mode ignores both, as SeaVGABIOS leaves them in whatever state during a VBE mode set."""
        if self.dispi.enabled:
            return False
        return not self.ar_index & AR_PALETTE_SOURCE or bool(self.sr[1] & SR1_SCREEN_OFF)

    @property
    def eight_bit_dac(self) -> bool:
        return self.dispi.eight_bit_dac

    # -- ports ---------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        port = PORT_BASE + offset
        if size == 1:
            return self.read_port(port)
        value = 0
        for i in range(size):
            value |= self.read_port(port + i) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        port = PORT_BASE + offset
        if size == 1:
            self.write_port(port, value & 0xFF)
            return
        # outw(0x3C4, index | value << 8) is how BIOSes set an indexed register in one go.
        for i in range(size):
            self.write_port(port + i, (value >> (8 * i)) & 0xFF)

    def _inactive(self, port: int) -> bool:
        # Misc output bit 0 moves the CRTC and input-status ports between 0x3Bx (mono) and 0x3Dx.
        if self.misc & 0x01:
            return 0x3B0 <= port <= 0x3BF
        return 0x3D0 <= port <= 0x3DF

    def read_port(self, port: int) -> int:
        if self._inactive(port):
            return 0xFF
        if port == 0x3C0:
            return self.ar_index
        if port == 0x3C1:
            index = self.ar_index & 0x1F
            return self.ar[index] if index < _AR_COUNT else 0
        if port == 0x3C2:
            return self.st00
        if port == 0x3C4:
            return self.sr_index
        if port == 0x3C5:
            return self.sr[self.sr_index]
        if port == 0x3C6:
            return self.dac.pel_mask
        if port == 0x3C7:
            return self.dac.state
        if port == 0x3C8:
            return self.dac.write_index
        if port == 0x3C9:
            return self.dac.read_data()
        if port == 0x3CA:
            return self.feature
        if port == 0x3CC:
            return self.misc
        if port == 0x3CE:
            return self.gr_index
        if port == 0x3CF:
            return self.gr[self.gr_index]
        if port in (0x3B4, 0x3D4):
            return self.cr_index
        if port in (0x3B5, 0x3D5):
            return self.cr[self.cr_index]
        if port in (0x3BA, 0x3DA):
            # Software waits for retrace edges by polling; toggling makes every such loop finish.
            self.st01 ^= ST01_RETRACE
            self.ar_flip_flop = 0
            return self.st01
        return 0xFF

    def write_port(self, port: int, value: int) -> None:
        if self._inactive(port):
            return
        if port == 0x3C0:
            if self.ar_flip_flop == 0:
                self.ar_index = value & 0x3F
            else:
                index = self.ar_index & 0x1F
                if index < _AR_COUNT:
                    self.ar[index] = value & _AR_BITS[index]
            self.ar_flip_flop ^= 1
        elif port == 0x3C2:
            self.misc = value
        elif port == 0x3C4:
            self.sr_index = value & 0x07
        elif port == 0x3C5:
            self.sr[self.sr_index] = value & _SR_BITS[self.sr_index]
        elif port == 0x3C6:
            self.dac.pel_mask = value
            self.dac.generation += 1
        elif port == 0x3C7:
            self.dac.set_read_index(value)
        elif port == 0x3C8:
            self.dac.set_write_index(value)
        elif port == 0x3C9:
            self.dac.write_data(value)
        elif port == 0x3CE:
            self.gr_index = value & 0x0F
        elif port == 0x3CF:
            self.gr[self.gr_index] = value & _GR_BITS[self.gr_index]
        elif port in (0x3B4, 0x3D4):
            self.cr_index = value
        elif port in (0x3B5, 0x3D5):
            index = self.cr_index
            if index <= 0x07 and self.cr[0x11] & 0x80:
                # CR0-CR7 are write-protected, except the line-compare bit 4 of the overflow register.
                if index == 0x07:
                    self.cr[0x07] = (self.cr[0x07] & ~0x10) | (value & 0x10)
                return
            self.cr[index] = value
        elif port in (0x3BA, 0x3DA):
            self.feature = value & 0x10

    # -- DISPI coupling --------------------------------------------------------------------------
    def _dispi_enabled(self, enabled: bool) -> None:
        """Entering a VBE mode puts the legacy registers where the Bochs banked window needs them:
        graphics mode, the 64 KiB window at 0xA0000, and chain-4 with all planes for packed pixels."""
        if not enabled:
            return
        dispi = self.dispi
        if not dispi.regs[dispi_regs.ENABLE] & dispi_regs.NOCLEARMEM:
            clear = dispi.clear_bytes()
            self.vram_bytes[:clear] = bytes(clear)
        self.gr[0x06] = (self.gr[0x06] & ~0x0C) | 0x04 | 0x01
        if dispi.regs[dispi_regs.BPP] == 4:
            self.sr[0x04] &= ~0x08
            self.gr[0x05] &= ~0x60
        else:
            self.sr[0x04] |= 0x08
            self.sr[0x02] = 0x0F
            self.gr[0x05] = (self.gr[0x05] & ~0x60) | 0x40

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Registers and DAC; VRAM is shared memory and saved by whoever owns it. The DISPI
        registers and the window latch are snapshotted by their own devices."""
        return {"sr": bytes(self.sr), "gr": bytes(self.gr), "cr": bytes(self.cr), "ar": bytes(self.ar),
                "sr_index": self.sr_index, "gr_index": self.gr_index, "cr_index": self.cr_index,
                "ar_index": self.ar_index, "ar_flip_flop": self.ar_flip_flop, "misc": self.misc,
                "feature": self.feature, "st00": self.st00, "st01": self.st01, "dac": self.dac.snapshot()}

    def restore(self, state: dict) -> None:
        sizes = {"sr": 8, "gr": 16, "cr": 256, "ar": _AR_COUNT}
        for key, size in sizes.items():
            if len(bytes(state[key])) != size:
                raise ValueError(f"VGA state has {len(bytes(state[key]))} {key.upper()} registers, "
                                 f"expected {size}")
        self.sr[:] = bytes(state["sr"])
        self.gr[:] = bytes(state["gr"])
        self.cr[:] = bytes(state["cr"])
        self.ar[:] = bytes(state["ar"])
        self.sr_index = int(state["sr_index"]) & 0x07
        self.gr_index = int(state["gr_index"]) & 0x0F
        self.cr_index = int(state["cr_index"]) & 0xFF
        self.ar_index = int(state["ar_index"]) & 0x3F
        self.ar_flip_flop = int(state["ar_flip_flop"]) & 1
        self.misc = int(state["misc"]) & 0xFF
        self.feature = int(state["feature"]) & 0xFF
        self.st00 = int(state["st00"]) & 0xFF
        self.st01 = int(state["st01"]) & 0xFF
        self.dac.restore(state["dac"])
