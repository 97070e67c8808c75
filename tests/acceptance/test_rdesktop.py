"""rdesktop under Xvfb against the RDP server of the Linux test guest (booted once on tcg, Security/Method
NEGOTIATE): RDP4 (-4) and RDP5.1 (-5) Standard Security, TLS by default, and the manual's
`rdesktop -a 16 -N` each show the guest screen pixel for pixel and type into its shell."""

import time

import pytest

from services.hw.input.ps2 import LED_NUM
from tests.support.rdp_clients import (
    Client,
    Display,
    assert_click_reaches_the_mouse,
    assert_screen_matches,
    assert_typing_reaches_the_shell,
    boot_guest,
    require,
    stop,
    wait_for,
)

NEGOTIATE = {"Security/Method": "NEGOTIATE"}


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    require("Xvfb", "xdotool", "import", "rdesktop")
    yield from boot_guest(tmp_path_factory.mktemp("rdesktop-guest"), NEGOTIATE)


@pytest.fixture(scope="module")
def display(tmp_path_factory):
    display = Display(tmp_path_factory.mktemp("rdesktop-x"))
    yield display
    display.close()


def rdesktop(display, guest, tmp_path, *options, geometry=("-g", "720x400")):
    # -r sound:off: no audio device here; the certificate question (TLS) is answered "yes" on stdin.
    # -g: the guest's text mode; rdesktop -4 keeps its window size whatever the server's desktop is.
    argv = ["rdesktop", "-u", "tester", "-p", "secret", "-r", "sound:off", "-v", *geometry, *options,
            f"127.0.0.1:{guest.port}"]
    return Client(display, argv, tmp_path / "rdesktop.log", "rdesktop")


def close(client, guest):
    connected = guest.vrdp_log().count(" connected")
    stop(client.process)
    client.close()
    wait_for(lambda: guest.vrdp_log().count(" disconnected") >= connected, 15, "disconnect logged",
             [guest.vrdp])


@pytest.mark.parametrize("method,options,bpp,security,seed", [
    # RDP4: no RDP_NEG_REQ, so Standard Security even though the server offers TLS too.
    ("NEGOTIATE", ("-4", "-a", "8"), 8, "Standard RDP Security with 128-bit RC4", 111),
    # RDP5.1: rdesktop 1.9 always asks for TLS first; a server without TLS refuses it and rdesktop
    # reconnects with plain RDP (the proprietary certificate).
    ("RDP", ("-5", "-a", "15"), 15, "Standard RDP Security with 128-bit RC4", 222),
    ("NEGOTIATE", ("-a", "24"), 24, "Enhanced RDP Security.", 333),
], ids=["rdp4", "rdp5", "default-tls"])
def test_screen_keyboard_and_mouse(guest, display, tmp_path, method, options, bpp, security, seed):
    if method != "NEGOTIATE":
        guest.reconfigure({"Security/Method": method})
    before = guest.vrdp_log()
    client = rdesktop(display, guest, tmp_path, *options)
    try:
        client.wait_window([guest.vrdp])
        assert_screen_matches(client, guest, bpp, tmp_path)
        new = guest.vrdp_log()[len(before):]
        assert f"active at 720x400, {bpp} bpp" in new and security in new, new
        if method == "RDP":
            assert "TLS is not allowed (SSL_NOT_ALLOWED_BY_SERVER)" in new
            assert "Retrying with plain RDP." in client.text()
        assert_typing_reaches_the_shell(client, guest, seed)
        assert_click_reaches_the_mouse(client, guest)
    finally:
        close(client, guest)
        if method != "NEGOTIATE":
            guest.reconfigure(NEGOTIATE)


def test_the_manuals_command_line(guest, display, tmp_path):
    """`rdesktop -a 16 -N host:port` (user_Frontends.xml): 16 bpp within 565 rounding, numlock synced:
    with Num Lock on in the X server, the guest's keyboard turns its Num Lock LED on."""
    before = guest.vrdp_log()
    display.xdotool("key", "Num_Lock")
    try:
        client = rdesktop(display, guest, tmp_path, "-a", "16", "-N", geometry=())
        try:
            client.wait_window([guest.vrdp])
            deadline = time.monotonic() + 20
            while not guest.keyboard_leds() & LED_NUM and time.monotonic() < deadline:
                time.sleep(0.5)
            assert guest.keyboard_leds() & LED_NUM, "rdesktop -N: the client's Num Lock did not reach the guest"
            assert_screen_matches(client, guest, 16, tmp_path, larger_window=True)
            assert "active at 720x400, 16 bpp" in guest.vrdp_log()[len(before):]
            assert_typing_reaches_the_shell(client, guest, 444)
        finally:
            close(client, guest)
    finally:
        display.xdotool("key", "Num_Lock")         # the X server's Num Lock back off for the others
