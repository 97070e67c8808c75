"""The 16550A model: transmit, receive, interrupt causes and the OUT2 gate, loopback probing."""

from services.hw.serial import (
    IER_RX,
    IER_THRE,
    IIR_NONE,
    IIR_RX,
    IIR_THRE,
    LSR_DR,
    MCR_LOOP,
    MCR_OUT2,
    Uart16550,
)


def make():
    lines, out = [], bytearray()
    return Uart16550(irq=lines.append, output=out.extend), lines, out


def test_transmit_and_thre_interrupt_through_out2():
    uart, lines, out = make()
    uart.write(1, 1, IER_THRE)
    assert uart.read(2, 1) & 0x0F == IIR_THRE
    assert lines == []                      # OUT2 low: the line stays quiet
    uart.write(4, 1, MCR_OUT2)
    uart.write(0, 1, ord("h"))
    assert lines == [True]
    assert uart.read(2, 1) & 0x0F == IIR_THRE   # reading IIR clears THRE
    assert uart.read(2, 1) & 0x0F == IIR_NONE and lines == [True, False]
    uart.write_string(0, 1, b"ello")
    assert bytes(out) == b"hello"


def test_receive_raises_rx_interrupt_until_drained():
    uart, lines, _ = make()
    uart.write(4, 1, MCR_OUT2)
    uart.write(1, 1, IER_RX)
    uart.receive(b"ls\n")
    assert lines == [True] and uart.read(2, 1) & 0x0F == IIR_RX
    assert uart.read(5, 1) & LSR_DR
    assert bytes(uart.read(0, 1) for _ in range(3)) == b"ls\n"
    assert not uart.read(5, 1) & LSR_DR and lines == [True, False]


def test_divisor_latch_scratch_and_loopback_probe():
    uart, _, out = make()
    uart.write(3, 1, 0x80)
    uart.write(0, 1, 0x01)
    uart.write(1, 1, 0x00)
    uart.write(3, 1, 0x03)
    assert uart.divisor == 1 and uart.read(3, 1) == 3
    uart.write(7, 1, 0x5A)
    assert uart.read(7, 1) == 0x5A
    uart.write(4, 1, MCR_LOOP | 0x0A)       # Linux's 8250 probe: RTS|OUT2 in loopback
    assert uart.read(6, 1) & 0xF0 == 0x90
    uart.write(0, 1, 0x42)
    assert uart.read(0, 1) == 0x42 and out == bytearray()


def test_snapshot_restore():
    uart, _, _ = make()
    uart.write(1, 1, IER_RX)
    uart.receive(b"ab")
    state = uart.snapshot()
    other, _, _ = make()
    other.restore(state)
    assert other.read(0, 1) == ord("a") and other.ier == IER_RX
