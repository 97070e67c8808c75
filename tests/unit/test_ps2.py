"""PS/2 keyboard and mouse: command replies, scan-code sets, special keys, LEDs, packets, wheel
detection, bounded queues and state, driven directly (the 8042 is tested on its own)."""

import pytest

from services.hw.input.ps2 import (
    BUTTON_BACK,
    BUTTON_LEFT,
    BUTTON_MIDDLE,
    BUTTON_RIGHT,
    KEY_QUEUE_LIMIT,
    LED_CAPS,
    LED_NUM,
    MOTION_LIMIT,
    MOUSE_QUEUE_LIMIT,
    SET1_TO_SET2,
    Ps2Keyboard,
    Ps2Mouse,
)


def drain(device) -> list[int]:
    out = []
    while device.has_output():
        out.append(device.pop())
    return out


def send(device, *data: int) -> list[int]:
    for byte in data:
        device.command(byte)
    return drain(device)


# -- keyboard -------------------------------------------------------------------------------------
def test_keyboard_reset_id_echo_and_unknown():
    kbd = Ps2Keyboard()
    assert send(kbd, 0xFF) == [0xFA, 0xAA]
    assert send(kbd, 0xF2) == [0xFA, 0xAB, 0x83]
    assert send(kbd, 0xEE) == [0xEE]
    assert send(kbd, 0x42) == [0xFE]
    assert send(kbd, 0xFE) == [0xFE]                 # resend repeats the last byte sent


def test_keyboard_scan_set_select_and_query():
    kbd = Ps2Keyboard()
    assert send(kbd, 0xF0, 0x00) == [0xFA, 0xFA, 0x02]
    assert send(kbd, 0xF0, 0x01) == [0xFA, 0xFA]
    assert send(kbd, 0xF0, 0x00) == [0xFA, 0xFA, 0x01]
    assert send(kbd, 0xF0, 0x03) == [0xFA, 0xFE]      # set 3 is not offered
    assert kbd.scan_set == 1
    assert send(kbd, 0xF5) == [0xFA]                 # defaults: back to set 2, scanning off
    assert kbd.scan_set == 2 and not kbd.scanning


def test_keyboard_enable_disable_and_typematic():
    kbd = Ps2Keyboard()
    assert send(kbd, 0xF5) == [0xFA]
    kbd.key(0x1E)
    assert drain(kbd) == []                          # scanning off: keys are not sent
    assert send(kbd, 0xF3, 0x20) == [0xFA, 0xFA]
    assert kbd.typematic == 0x20
    assert send(kbd, 0xF4) == [0xFA]
    kbd.key(0x1E)
    assert drain(kbd) == [0x1C]
    assert send(kbd, 0xF6) == [0xFA]
    assert kbd.scanning and kbd.typematic == 0x2B


def test_keyboard_leds_reported_on_change():
    seen = []
    kbd = Ps2Keyboard(on_leds=seen.append)
    assert send(kbd, 0xED, LED_CAPS | LED_NUM) == [0xFA, 0xFA]
    assert send(kbd, 0xED, LED_CAPS | LED_NUM) == [0xFA, 0xFA]
    assert seen == [LED_CAPS | LED_NUM]
    assert send(kbd, 0xFF) == [0xFA, 0xAA]           # reset turns them off
    assert seen == [LED_CAPS | LED_NUM, 0]


def test_command_in_place_of_a_parameter_is_a_command():
    kbd = Ps2Keyboard()
    assert send(kbd, 0xED, 0xF2) == [0xFA, 0xFA, 0xAB, 0x83]


def test_set2_codes_with_prefixes():
    kbd = Ps2Keyboard()
    kbd.key(0x1E, pressed=True)                      # A
    kbd.key(0x1E, pressed=False)
    kbd.key(0x48, extended=True)                     # Up arrow
    kbd.key(0x48, extended=True, pressed=False)
    kbd.key(0x1D, extended=True)                     # right Ctrl
    assert drain(kbd) == [0x1C, 0xF0, 0x1C, 0xE0, 0x75, 0xE0, 0xF0, 0x75, 0xE0, 0x14]


def test_set1_codes():
    kbd = Ps2Keyboard()
    send(kbd, 0xF0, 0x01)
    kbd.key(0x1E)
    kbd.key(0x1E, pressed=False)
    kbd.key(0x53, extended=True, pressed=False)      # Delete released
    assert drain(kbd) == [0x1E, 0x9E, 0xE0, 0xD3]


def test_every_mapped_key_has_a_distinct_set2_code():
    codes = list(SET1_TO_SET2.values())
    assert len(codes) == len(set(codes))
    assert SET1_TO_SET2[0x01] == 0x76 and SET1_TO_SET2[0x41] == 0x83 and SET1_TO_SET2[0x58] == 0x07


def test_pause_from_rdp_extended1_sequence():
    kbd = Ps2Keyboard()
    kbd.key(0x1D, pressed=True, extended1=True)
    kbd.key(0x45, pressed=True)
    kbd.key(0x1D, pressed=False, extended1=True)
    kbd.key(0x45, pressed=False)
    assert drain(kbd) == [0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77]
    send(kbd, 0xF0, 0x01)
    kbd.pause()
    assert drain(kbd) == [0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]


def test_numlock_numbered_extended_is_plain_numlock():
    kbd = Ps2Keyboard()
    kbd.key(0x45, extended=True)
    assert drain(kbd) == [0x77]


def test_print_screen_depends_on_modifiers():
    kbd = Ps2Keyboard()
    kbd.key(0x37, extended=True)
    kbd.key(0x37, extended=True, pressed=False)
    assert drain(kbd) == [0xE0, 0x12, 0xE0, 0x7C, 0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12]
    kbd.key(0x2A)                                    # left Shift held
    kbd.key(0x37, extended=True)
    assert drain(kbd) == [0x12, 0xE0, 0x7C]
    kbd.key(0x2A, pressed=False)
    kbd.key(0x38)                                    # Alt held: SysRq
    kbd.key(0x37, extended=True)
    assert drain(kbd) == [0xF0, 0x12, 0x11, 0x84]


def test_ctrl_break_is_make_and_break_at_once():
    kbd = Ps2Keyboard()
    send(kbd, 0xF0, 0x01)
    kbd.key(0x46, extended=True)
    kbd.key(0x46, extended=True, pressed=False)
    assert drain(kbd) == [0xE0, 0x46, 0xE0, 0xC6]


def test_key_queue_is_bounded_and_keeps_sequences_whole():
    kbd = Ps2Keyboard()
    for _ in range(KEY_QUEUE_LIMIT):
        kbd.key(0x48, extended=True, pressed=False)   # 3 bytes each
    data = drain(kbd)
    assert len(data) <= KEY_QUEUE_LIMIT and len(data) % 3 == 0


def test_replies_go_ahead_of_queued_keys():
    kbd = Ps2Keyboard()
    kbd.key(0x1E)
    assert send(kbd, 0xEE) == [0xEE, 0x1C]


def test_keyboard_snapshot_restore():
    kbd = Ps2Keyboard()
    send(kbd, 0xF0, 0x01, 0xED, LED_NUM)
    kbd.key(0x2A)
    kbd.key(0x1E)
    state = kbd.snapshot()
    seen = []
    other = Ps2Keyboard(on_leds=seen.append)
    other.restore(state)
    assert seen == [LED_NUM] and other.scan_set == 1 and other.held == {(0x2A, False)}
    assert drain(other) == drain(kbd) == [0x2A, 0x1E]


# -- mouse ----------------------------------------------------------------------------------------
def test_mouse_reset_and_defaults():
    mouse = Ps2Mouse()
    assert send(mouse, 0xFF) == [0xFA, 0xAA, 0x00]
    assert send(mouse, 0xF2) == [0xFA, 0x00]
    assert send(mouse, 0xE9) == [0xFA, 0x00, 0x02, 100]
    assert send(mouse, 0xF3, 40, 0xE8, 3, 0xE7, 0xF4) == [0xFA] * 6
    assert send(mouse, 0xE9) == [0xFA, 0x30, 0x03, 40]
    assert send(mouse, 0xF6) == [0xFA]
    assert send(mouse, 0xE9) == [0xFA, 0x00, 0x02, 100]
    assert send(mouse, 0x42) == [0xFE]


def test_mouse_reports_only_when_enabled():
    mouse = Ps2Mouse()
    mouse.mouse(5, 5)
    assert drain(mouse) == []
    send(mouse, 0xF4)
    mouse.mouse(5, -3, buttons=BUTTON_LEFT)
    assert drain(mouse) == [0x09, 5, 3]              # dy up on screen is +3 for PS/2
    mouse.mouse(-2, 4, buttons=BUTTON_LEFT | BUTTON_RIGHT | BUTTON_MIDDLE)
    assert drain(mouse) == [0x08 | 0x07 | 0x10 | 0x20, 0xFE, 0xFC]
    mouse.mouse(0, 0, buttons=BUTTON_LEFT | BUTTON_RIGHT | BUTTON_MIDDLE)
    assert drain(mouse) == []                        # nothing changed, nothing sent
    mouse.mouse(0, 0, buttons=0)
    assert drain(mouse) == [0x08, 0, 0]


def test_large_motion_is_split_into_packets():
    mouse = Ps2Mouse()
    send(mouse, 0xF4)
    mouse.mouse(600, -300)
    data = drain(mouse)
    packets = [data[i:i + 3] for i in range(0, len(data), 3)]
    total_x = total_y = 0
    for head, x, y in packets:
        assert head & 0x08 and not head & 0xC0
        total_x += x - (0x100 if head & 0x10 else 0)
        total_y += y - (0x100 if head & 0x20 else 0)
    assert (total_x, total_y) == (600, 300) and len(packets) == 3


def test_motion_beyond_the_queue_waits_for_the_guest():
    mouse = Ps2Mouse()
    send(mouse, 0xF4)
    for _ in range(6):
        mouse.mouse(4000, 0)
    assert len(mouse.data) <= MOUSE_QUEUE_LIMIT and mouse.dx > 0
    received = 0
    while mouse.has_output():
        head, x, _ = mouse.pop(), mouse.pop(), mouse.pop()
        assert not head & 0x40
        received += x - (0x100 if head & 0x10 else 0)
    assert received == 24000 and mouse.dx == 0


def test_overflow_bit_flags_lost_motion():
    mouse = Ps2Mouse()
    send(mouse, 0xF4)
    mouse.mouse(10 * MOTION_LIMIT, 0)
    packets = drain(mouse)
    assert packets[0] & 0x40                         # motion was lost, and the packet says so
    assert sum(packets[i + 1] for i in range(0, len(packets), 3)) == MOTION_LIMIT


def test_intellimouse_and_explorer_detection():
    mouse = Ps2Mouse()
    assert send(mouse, 0xF3, 200, 0xF3, 100, 0xF3, 80, 0xF2)[-1] == 3
    send(mouse, 0xF4)
    mouse.mouse(1, 0, dz=1)                          # wheel away from the user: scrolls up
    assert drain(mouse) == [0x08, 1, 0, 0xFF]
    assert send(mouse, 0xF3, 200, 0xF3, 200, 0xF3, 80, 0xF2)[-1] == 4
    mouse.mouse(0, 0, dz=-20, buttons=BUTTON_BACK)
    data = drain(mouse)
    assert [len(data[i:i + 4]) for i in range(0, len(data), 4)] == [4, 4, 4]
    assert sum((b & 0x0F) - (0x10 if b & 0x08 else 0) for b in data[3::4]) == 20
    assert data[3] & 0x10                            # button 4
    assert send(mouse, 0xFF) == [0xFA, 0xAA, 0x00]   # reset: a plain mouse again
    assert send(mouse, 0xF2) == [0xFA, 0x00]


def test_remote_mode_poll_and_wrap_mode():
    mouse = Ps2Mouse()
    send(mouse, 0xF0)
    mouse.mouse(7, 0, buttons=BUTTON_RIGHT)
    assert drain(mouse) == []
    assert send(mouse, 0xEB) == [0xFA, 0x0A, 7, 0]
    assert send(mouse, 0xEA) == [0xFA]
    assert send(mouse, 0xEE, 0x12, 0xE9) == [0xFA, 0x12, 0xE9]   # wrap: echoed
    assert send(mouse, 0xEC) == [0xFA]
    assert send(mouse, 0xE9)[0] == 0xFA


def test_scaling_2_to_1_applies_to_stream_packets():
    mouse = Ps2Mouse()
    send(mouse, 0xE7, 0xF4)
    mouse.mouse(4, 0)
    assert drain(mouse) == [0x08, 6, 0]


def test_mouse_snapshot_restore():
    mouse = Ps2Mouse()
    send(mouse, 0xF3, 200, 0xF3, 100, 0xF3, 80, 0xF4)
    mouse.mouse(3, 3, buttons=BUTTON_MIDDLE)
    other = Ps2Mouse()
    other.restore(mouse.snapshot())
    assert other.kind == 3 and other.reporting and other.buttons == BUTTON_MIDDLE
    assert drain(other) == drain(mouse)


@pytest.mark.parametrize("device", [Ps2Keyboard, Ps2Mouse])
def test_reply_queue_is_bounded(device):
    dev = device()
    for _ in range(100):
        dev.command(0xEE if device is Ps2Keyboard else 0xE6)
    assert len(dev.replies) <= 16


def test_lock_sync_presses_only_the_locks_that_differ():
    from services.hw.input.ps2 import LED_CAPS, LED_NUM, LED_SCROLL, Ps2Keyboard
    keyboard = Ps2Keyboard()
    keyboard.leds = LED_CAPS
    assert keyboard.lock_presses(LED_NUM | LED_CAPS) == [0x45]
    assert keyboard.lock_presses(LED_SCROLL) == [0x46, 0x3A]
    assert keyboard.lock_presses(LED_CAPS) == []
