"""The 8042 controller through its ports: status bits, command byte, self-tests, XLATE, A20 and
reset lines, IRQ1/IRQ12 edges, the aux port, SeaBIOS's and Linux's probe sequences, state."""

import pytest

from services.hw.bus import Bus
from services.hw.input.i8042 import (
    COMMAND_PORT,
    CTR_AUXDIS,
    CTR_AUXINT,
    CTR_KBDDIS,
    CTR_KBDINT,
    CTR_XLATE,
    DATA_PORT,
    I8042,
    STATUS_AUX,
    STATUS_CMD,
    STATUS_OBF,
    STATUS_SYS,
    STATUS_TIMEOUT,
    STATUS_UNLOCKED,
)
from services.hw.input.ps2 import SET1_TO_SET2, Ps2Keyboard


class Board:
    """An 8042 on a bus, with its interrupt lines and reset/A20 lines recorded."""

    def __init__(self, **kwargs):
        self.irqs, self.resets, self.a20 = [], [], []
        self.kbc = I8042(irq=lambda line, level: self.irqs.append((line, level)),
                         reset=lambda: self.resets.append(1), on_a20_change=self.a20.append, **kwargs)
        self.bus = Bus()
        self.bus.register(self.kbc, "pio", DATA_PORT, 1)
        self.bus.register(self.kbc.command_port, "pio", COMMAND_PORT, 1)

    def status(self) -> int:
        return self.bus.pio_read(COMMAND_PORT, 1)

    def command(self, byte: int, *data: int) -> None:
        self.bus.pio_write(COMMAND_PORT, 1, byte)
        for value in data:
            self.bus.pio_write(DATA_PORT, 1, value)

    def send(self, byte: int) -> None:
        self.bus.pio_write(DATA_PORT, 1, byte)

    def read_all(self) -> list[tuple[int, bool]]:
        out = []
        while self.status() & STATUS_OBF:
            aux = bool(self.status() & STATUS_AUX)
            out.append((self.bus.pio_read(DATA_PORT, 1), aux))
        return out

    def data(self) -> list[int]:
        return [byte for byte, _ in self.read_all()]


@pytest.fixture
def board():
    return Board()


def test_power_on_status_and_empty_buffer(board):
    assert board.status() == STATUS_UNLOCKED | STATUS_CMD
    assert board.data() == []


def test_self_tests_and_command_byte(board):
    board.command(0xAA)
    assert board.status() & (STATUS_OBF | STATUS_SYS) == STATUS_OBF | STATUS_SYS
    assert board.data() == [0x55]
    board.command(0xAB)
    board.command(0xA9)
    assert board.data() == [0x00, 0x00]
    board.command(0x60, 0x61)
    assert not board.status() & STATUS_CMD            # the last write went to the data port
    board.command(0x20)
    assert board.data() == [0x61]
    board.command(0x7F, 0x5A)                         # controller RAM beyond the command byte
    board.command(0x3F)
    assert board.data() == [0x5A]


def test_enable_disable_commands_edit_the_command_byte(board):
    board.command(0x60, 0x00)
    board.command(0xAD)
    board.command(0xA7)
    board.command(0x20)
    assert board.data() == [CTR_KBDDIS | CTR_AUXDIS]
    board.command(0xAE)
    board.command(0xA8)
    board.command(0x20)
    assert board.data() == [0x00]


def test_seabios_keyboard_setup_sequence():
    board = Board()
    # ps2_keyboard_setup: flush, disable both, self-tests, then each keyboard command with the
    # command byte rewritten around it (interrupts off, port enabled), as src/hw/ps2port.c does.
    assert board.data() == []
    board.command(0xAD)
    board.command(0xA7)
    board.command(0xAA)
    assert board.data() == [0x55]
    board.command(0xAB)
    assert board.data() == [0x00]
    for command, params, reply in ((0xFF, (), [0xFA, 0xAA]), (0xF5, (), [0xFA]),
                                   (0xF0, (0x02,), [0xFA, 0xFA]), (0xF4, (), [0xFA])):
        board.command(0x60, 0x30)
        board.command(0x60, 0x20)
        board.send(command)
        for param in params:
            board.send(param)
        assert board.read_all() == [(b, False) for b in reply]
    board.command(0x60, CTR_AUXDIS | CTR_XLATE | CTR_KBDINT)
    board.irqs.clear()
    board.kbc.keyboard.key(0x1E)
    assert board.irqs == [(1, True)]
    assert board.data() == [0x1E]                     # set 2 through XLATE: the set-1 code
    assert board.irqs == [(1, True), (1, False)]


def test_xlate_gives_back_every_set1_code():
    board = Board()
    board.command(0x60, CTR_XLATE)
    kbd = board.kbc.keyboard
    for code in SET1_TO_SET2:
        if code in (0x37, 0x46, 0x45, 0x54):          # keys with sequences of their own
            continue
        for extended in (False, True):
            kbd.key(code, extended, True)
            kbd.key(code, extended, False)
            prefix = [0xE0] if extended else []
            assert board.data() == prefix + [code] + prefix + [code | 0x80], hex(code)


def test_xlate_off_gives_set2_and_xlate_on_translates_replies(board):
    board.command(0x60, 0x00)
    board.kbc.keyboard.key(0x1E, pressed=False)
    assert board.data() == [0xF0, 0x1C]
    board.send(0xF2)
    assert board.data() == [0xFA, 0xAB, 0x83]
    board.command(0x60, CTR_XLATE)
    board.send(0xF2)
    assert board.data() == [0xFA, 0xAB, 0x41]         # as real controllers and QEMU translate it
    board.send(0xF0)
    board.send(0x00)
    assert board.data() == [0xFA, 0xFA, 0x41]         # "set 2", translated


def test_pause_and_print_screen_through_xlate(board):
    board.command(0x60, CTR_XLATE)
    kbd = board.kbc.keyboard
    kbd.key(0x1D, extended1=True)
    kbd.key(0x45)
    assert board.data() == [0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]
    kbd.key(0x37, extended=True)
    kbd.key(0x37, extended=True, pressed=False)
    assert board.data() == [0xE0, 0x2A, 0xE0, 0x37, 0xE0, 0xB7, 0xE0, 0xAA]


def test_set1_without_xlate(board):
    board.command(0x60, 0x00)
    board.send(0xF0)
    board.send(0x01)
    assert board.data() == [0xFA, 0xFA]
    board.kbc.keyboard.key(0x48, extended=True)
    assert board.data() == [0xE0, 0x48]


def test_keyboard_disable_holds_keys_until_enabled(board):
    board.command(0x60, CTR_KBDDIS | CTR_XLATE)
    board.kbc.keyboard.key(0x1E)
    assert board.data() == []
    board.command(0xAE)
    assert board.data() == [0x1E]


def test_interrupt_per_byte_and_gated_by_command_byte(board):
    board.command(0x60, CTR_KBDINT | CTR_XLATE)
    board.irqs.clear()
    board.kbc.keyboard.key(0x48, extended=True)       # two bytes: two edges
    assert board.data() == [0xE0, 0x48]
    assert board.irqs == [(1, True), (1, False), (1, True), (1, False)]
    board.irqs.clear()
    board.command(0x60, CTR_XLATE)
    board.kbc.keyboard.key(0x1E)
    assert board.irqs == []
    board.command(0x60, CTR_XLATE | CTR_KBDINT)       # enabling with a byte waiting raises it
    assert board.irqs == [(1, True)]
    assert board.data() == [0x1E]


def test_controller_replies_raise_irq1_when_enabled(board):
    board.command(0x60, CTR_KBDINT)
    board.irqs.clear()
    board.command(0x20)
    assert board.irqs == [(1, True)]


def test_mouse_on_the_aux_port_raises_irq12(board):
    board.command(0x60, CTR_KBDINT | CTR_AUXINT)
    board.irqs.clear()
    board.command(0xD4, 0xFF)
    assert board.read_all() == [(0xFA, True), (0xAA, True), (0x00, True)]
    assert (12, True) in board.irqs and (1, True) not in board.irqs
    board.command(0xD4, 0xF4)
    assert board.read_all() == [(0xFA, True)]
    board.kbc.mouse.mouse(1, 0)
    assert board.read_all() == [(0x08, True), (0x01, True), (0x00, True)]
    board.command(0xA7)                               # aux disabled: packets wait in the mouse
    board.kbc.mouse.mouse(1, 0)
    assert board.read_all() == []
    board.command(0xA8)
    assert len(board.read_all()) == 3


def test_keyboard_data_goes_before_mouse_data(board):
    board.command(0xD4, 0xF4)
    board.read_all()
    board.kbc.mouse.mouse(1, -1)                      # its first byte fills the empty buffer
    board.kbc.keyboard.key(0x1E)                      # then the keyboard goes first
    assert board.read_all() == [(0x08, True), (0x1C, False), (0x01, True), (0x01, True)]


def test_absent_mouse_times_out():
    board = Board(mouse=None)
    board.command(0xD4, 0xFF)
    flags = STATUS_OBF | STATUS_AUX | STATUS_TIMEOUT
    assert board.status() & flags == flags
    assert board.data() == [0xFE]


def test_write_output_buffers_d2_d3(board):
    board.command(0xD2, 0x12)
    assert board.read_all() == [(0x12, False)]
    board.command(0xD3, 0x5A)                         # Linux's aux loopback test
    assert board.read_all() == [(0x5A, True)]


def test_output_port_a20_and_reset(board):
    board.command(0xD0)
    assert board.data() == [0xCF]
    board.command(0xD1, 0xCD)                         # A20 off
    assert board.a20 == [False] and not board.kbc.a20 and board.resets == []
    board.command(0xDF)
    assert board.a20 == [False, True]
    board.command(0xD1, 0xCE)                         # bit 0 low: reset
    assert board.resets == [1]
    board.command(0xFE)
    board.command(0xFF)                               # pulses nothing
    assert board.resets == [1, 1]


def test_stale_byte_reads_again(board):
    board.command(0xAA)
    assert board.data() == [0x55]
    assert board.bus.pio_read(DATA_PORT, 1) == 0x55
    assert not board.status() & STATUS_OBF


def test_keyboard_command_reenables_the_keyboard_interface(board):
    board.command(0xAD)
    board.send(0xEE)
    assert board.data() == [0xEE]
    board.command(0x20)
    assert not board.data()[0] & CTR_KBDDIS


def test_leds_reach_the_host():
    seen = []
    board = Board(keyboard=Ps2Keyboard(on_leds=seen.append))
    board.send(0xED)
    board.send(0x04)
    assert board.data() == [0xFA, 0xFA] and seen == [0x04]


def test_snapshot_restore_and_reset(board):
    board.command(0x60, CTR_KBDINT | CTR_XLATE)
    board.command(0xD4, 0xF4)
    board.kbc.keyboard.key(0x1E)
    board.kbc.keyboard.key(0x30)
    board.command(0xD1)                                # a command waiting for its data byte
    state = board.kbc.snapshot()
    expected = Board()
    expected.kbc.restore(state)
    assert expected.kbc.lines == board.kbc.lines
    expected.send(0xCF)
    board.send(0xCF)
    assert expected.read_all() == board.read_all()
    assert expected.irqs == board.irqs[-len(expected.irqs):]

    board.kbc.reset()
    assert board.kbc.ctr == CTR_KBDINT | CTR_AUXINT and board.data() == []
    assert board.kbc.lines == {1: False, 12: False}
    with pytest.raises(ValueError):
        Board(mouse=None).kbc.restore(state)
