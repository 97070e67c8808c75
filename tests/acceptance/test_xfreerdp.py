"""xfreerdp under Xvfb against the RDP server of the Linux test guest (booted once on tcg, Security/Method
NEGOTIATE): TLS and Standard RDP Security at every colour depth show the guest screen pixel for pixel
(after the depth's quantisation), typed lines reach the guest's shell and clicks its PS/2 mouse."""

import pytest

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

NEGOTIATE = {"Security/Method": "NEGOTIATE", "Security/RDPMinEncryption": "40"}


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    require("Xvfb", "xdotool", "import", "xfreerdp")
    yield from boot_guest(tmp_path_factory.mktemp("xfreerdp-guest"), NEGOTIATE)


@pytest.fixture(scope="module")
def display(tmp_path_factory):
    display = Display(tmp_path_factory.mktemp("xfreerdp-x"))
    yield display
    display.close()


def xfreerdp(display, guest, tmp_path, *options):
    argv = ["xfreerdp", f"/v:127.0.0.1:{guest.port}", "/cert:ignore", "/u:tester", "/p:secret",
            "/size:720x400", "-clipboard", *options]
    return Client(display, argv, tmp_path / "xfreerdp.log", "FreeRDP")


def close(client, guest):
    connected = guest.vrdp_log().count(" connected")
    stop(client.process)
    client.close()
    # The next client must not meet this one (one connection at a time without multicon).
    wait_for(lambda: guest.vrdp_log().count(" disconnected") >= connected, 15, "disconnect logged",
             [guest.vrdp])


@pytest.mark.parametrize("security", ["tls", "rdp"])
def test_32bpp_screen_keyboard_and_mouse(guest, display, tmp_path, security):
    client = xfreerdp(display, guest, tmp_path, f"/sec:{security}", "/bpp:32")
    try:
        client.wait_window([guest.vrdp])
        assert_screen_matches(client, guest, 32, tmp_path)
        log = guest.vrdp_log()
        assert "active at 720x400, 32 bpp" in log and "user 'tester'" in log
        if security == "rdp":
            assert "Standard RDP Security with 128-bit RC4" in log
        else:
            assert "Enhanced RDP Security." in log
        assert_typing_reaches_the_shell(client, guest, 4321 if security == "tls" else 1234)
        assert_click_reaches_the_mouse(client, guest)
    finally:
        close(client, guest)


@pytest.mark.parametrize("bpp,bits", [(24, 128), (16, 128), (15, 56), (8, 40)])
def test_standard_security_at_each_depth(guest, display, tmp_path, bpp, bits):
    # 40- and 56-bit keys are salted 64-bit keys: a wrong salt garbles the first PDU after the exchange.
    client = xfreerdp(display, guest, tmp_path, "/sec:rdp", f"/bpp:{bpp}", f"/encryption-methods:{bits}")
    try:
        client.wait_window([guest.vrdp])
        assert_screen_matches(client, guest, bpp, tmp_path)
        log = guest.vrdp_log()
        assert f"active at 720x400, {bpp} bpp" in log
        assert f"WARNING Standard RDP Security with {bits}-bit RC4: weak encryption without TLS" in log
    finally:
        close(client, guest)


def test_security_method_refusals(guest, display, tmp_path):
    """TLS-only refuses /sec:rdp, RDP-only refuses /sec:tls, an unreadable certificate refuses TLS
    with SSL_CERT_NOT_ON_SERVER while Standard Security still works; each with its log line."""
    cases = [({"Security/Method": "TLS"}, "/sec:rdp", "TLS is required (SSL_REQUIRED_BY_SERVER)"),
             ({"Security/Method": "RDP"}, "/sec:tls", "TLS is not allowed (SSL_NOT_ALLOWED_BY_SERVER)"),
             ({"Security/Method": "NEGOTIATE", "Security/ServerCertificate": str(tmp_path / "missing.pem"),
               "Security/ServerPrivateKey": str(tmp_path / "missing.key")}, "/sec:tls",
              "the TLS certificate is unusable (SSL_CERT_NOT_ON_SERVER)")]
    try:
        for properties, option, line in cases:
            guest.reconfigure(properties)
            client = xfreerdp(display, guest, tmp_path, option, "/bpp:16")
            try:
                assert client.process.wait(40) != 0, "the client connected although it must be refused"
                assert line in guest.vrdp_log()
            finally:
                client.close()
        assert "TLS is not available, TLS clients are refused" in guest.vrdp_log()
        client = xfreerdp(display, guest, tmp_path, "/sec:rdp", "/bpp:16")
        try:
            client.wait_window([guest.vrdp])
            assert_screen_matches(client, guest, 16, tmp_path)
        finally:
            close(client, guest)
    finally:
        guest.reconfigure(NEGOTIATE)
