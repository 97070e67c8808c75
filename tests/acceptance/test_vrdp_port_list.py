"""The manual's port list (`--vrdeport 5000,5010-5012`): with the first ports taken the VM's RDP server
binds the next free one, and `showvminfo` reports the port actually bound (issue 5, acceptance 5)."""

from __future__ import annotations

import socket


def three_free_ports() -> tuple[int, int, int]:
    """A free port p and p+10, p+11 free too (a list with a gap and a range, as the manual's)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        ports = (base, base + 10, base + 11)
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return ports
    raise AssertionError("no three free ports found")


def test_first_ports_taken_binds_the_next_and_showvminfo_reports_it(cli):  # noqa: F811
    first, second, third = three_free_ports()
    holders = []
    try:
        for port in (first, second):
            holder = socket.socket()
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("127.0.0.1", port))
            holder.listen()
            holders.append(holder)
        cli("createvm", "--name", "ports", "--register")
        cli("modifyvm", "ports", "--memory", "32", "--accel", "tcg", "--boot1", "dvd", "--vrde", "on",
            "--vrdeaddress", "127.0.0.1", "--vrdeport", f"{first},{second}-{third}")
        cli("startvm", "ports", "--type", "headless")
        try:
            info = cli.showvminfo("ports")
            assert info["vrdeport"] == str(third), info
            assert f"VRDE port:                   {third}\n" in cli("showvminfo", "ports")
            with socket.create_connection(("127.0.0.1", third), timeout=5):
                pass
        finally:
            cli("controlvm", "ports", "poweroff")
    finally:
        for holder in holders:
            holder.close()
