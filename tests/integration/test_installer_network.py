"""Acceptance (issue 12): the Debian installer gets through its network configuration with NAT.
The installer boots from its ISO with an 82540EM on NAT; at its boot menu the test edits the
command line (Tab) to put the installer on the serial console with English/US preseeded, so the
dialogs come as text. Its netcfg then loads e1000 and asks for a DHCP lease: success is the next
question, the hostname; failure would be "Network autoconfiguration failed"."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from services.headless import VmProcesses
from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.io import InputSender
from services.ipc.naming import endpoint
from services.ipc.network import NetAdapter
from services.ipc.spec import Drive, LaunchSpec
from tests.guests.installer_iso import installer_iso
from tests.support.installer_screen import Screen, is_menu, type_text
from tests.support.serial_guest import SerialLog

MEMORY_MIB = 512
MENU_TIMEOUT = 60.0
NETWORK_TIMEOUT = 420.0      # from Enter: kernel, installer start, hardware detection, DHCP
BOOT_ARGS = " console=ttyS0,115200n8 language=en country=US keymap=us"
HOSTNAME_QUESTION = re.compile(rb"[Hh]ostname")
LOW_MEMORY_NOTE = re.compile(rb"Entering low memory mode")
DHCP_FAILED = re.compile(rb"[Nn]etwork autoconfiguration failed")


def control(vm_id: str, request):
    client = ControlClient(endpoint(vm_id, "control-devices"), timeout_ms=10_000)
    try:
        return client.call(request)
    finally:
        client.close()


def test_installer_configures_its_network_with_dhcp(tmp_path):
    serial = SerialLog(tmp_path / "serial.log")
    spec = LaunchSpec(vm_id="inst" + uuid.uuid4().hex[:8], memory_mib=MEMORY_MIB, accel="tcg",
                      drives=[Drive(1, 0, "dvd", str(installer_iso()))], serial_log=str(serial.path),
                      nics=[NetAdapter(0, "82540EM", "080027C0FFEE")])
    vm = VmProcesses(spec)
    shots = tmp_path / "screens"
    shots.mkdir()
    vm.start()
    screen = Screen(spec.vm_id, shots, time.monotonic())
    keys = InputSender(endpoint(spec.vm_id, "input"))
    try:
        screen.wait(is_menu, MENU_TIMEOUT, "stable installer boot menu")
        type_text(keys, "\t")                    # edit the "Install" entry's command line
        time.sleep(0.5)
        type_text(keys, BOOT_ARGS + "\n")
        entered = time.monotonic()
        deadline = entered + NETWORK_TIMEOUT
        notes = 0
        while True:
            data = serial.poll()
            if len(LOW_MEMORY_NOTE.findall(data)) > notes:
                notes += 1                      # at 512 MiB the installer says so first: Continue
                print(f"low memory note {time.monotonic() - entered:.0f} s after Enter")
                time.sleep(1)
                control(spec.vm_id, ops.SerialInput(data=b"\r"))
            if DHCP_FAILED.search(data):
                pytest.fail("the installer's DHCP failed:\n" + serial.tail(), pytrace=False)
            if HOSTNAME_QUESTION.search(data):
                break
            assert vm.vcpu.poll() is None and vm.devices.poll() is None, "a VM process ended"
            if time.monotonic() > deadline:
                pytest.fail(f"the installer asked no hostname within {NETWORK_TIMEOUT:.0f} s; serial "
                            f"console ends with:\n{serial.tail()}; screens in {shots}", pytrace=False)
            time.sleep(0.5)
        print(f"hostname question {time.monotonic() - entered:.0f} s after Enter")
    finally:
        keys.close()
        screen.close()
        vm.kill()
        serial.close()
