"""Acceptance (issue 3): every bad input gets one clear error line and no traceback, and loses
nothing.

Each case runs the real command line as a subprocess (`python -m services.headless`, and the
vCPU and device processes' own `python -m services.vcpu` / `python -m services.devices`) and
must: exit non-zero, print exactly one line "PROG: error: ..." on stderr that names the file or
the problem, print no "Traceback" anywhere, leave the damaged file as it was, and leave no shared
memory behind. An image in use by a running VM is refused to a second VM while the first keeps
running."""

from __future__ import annotations

import glob
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from services.images import vdi
from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.naming import endpoint
from services.ipc.spec import Drive, LaunchSpec
from tests.support.vm_processes import process_argv_for

MiB = 1 << 20
TIMEOUT = 60


NAMES: list[str] = []


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """An isolated runtime folder for the VMs of one test (sockets), in our env and theirs; the
    shared memory of its VMs is removed afterwards even when a test failed on it."""
    folder = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield {**os.environ, "XDG_RUNTIME_DIR": str(folder)}
    while NAMES:
        for path in shm_of(NAMES.pop()):
            os.unlink(path)


def vm_name() -> str:
    NAMES.append("bad" + uuid.uuid4().hex[:8])
    return NAMES[-1]


def shm_of(vm_id: str) -> list[str]:
    return glob.glob(f"/dev/shm/headbox-{vm_id}-*")


def run(env, program: str, spec: LaunchSpec) -> subprocess.CompletedProcess:
    """One of a VM's processes on its own, told by `spec`."""
    return subprocess.run(process_argv_for(program, spec, env["XDG_RUNTIME_DIR"]), env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def assert_one_error(result: subprocess.CompletedProcess, prog: str, *names: str) -> str:
    """Non-zero exit, exactly one "PROG: error: " line (and no other program's error line),
    naming everything in `names`; no traceback. Returns the line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"exit code 0; stderr:\n{result.stderr}"
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, f"expected one '{prog}: error:' line in stderr:\n{result.stderr}"
    others = [line for line in lines if ": error: " in line and line not in errors]
    assert not others, f"other error lines besides {errors[0]!r}:\n{result.stderr}"
    line = errors[0]
    for name in names:
        assert name in line, f"{name!r} is not named in {line!r}"
    return line


def headless(env, vm_id: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "services.headless", "--name", vm_id, "--accel", "tcg", *args],
                            env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert not shm_of(vm_id), f"shared memory left behind: {shm_of(vm_id)}"
    return result


# -- images -------------------------------------------------------------------------------------

def good_vdi(path: Path) -> Path:
    """A 16 MiB dynamic VDI with two blocks written."""
    vdi.create(str(path), 16 * MiB)
    image = vdi.open(str(path))
    try:
        image.write(0, b"\xab" * 512)
        image.write(5 * MiB, b"\xcd" * 512)
        image.flush()
    finally:
        image.close()
    return path


def damage(path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "truncated header":
        data = data[:200]
    elif how == "bad signature":
        struct.pack_into("<I", data, 64, 0x12345678)
    elif how == "block map past the image":
        offset_bmap = struct.unpack_from("<I", data, 340)[0]
        struct.pack_into("<I", data, offset_bmap, 0x00100000)
    elif how == "two blocks share data":
        offset_bmap = struct.unpack_from("<I", data, 340)[0]
        first = struct.unpack_from("<I", data, offset_bmap)[0]
        struct.pack_into("<I", data, offset_bmap + 4 * 7, first)
    else:
        raise AssertionError(how)
    path.write_bytes(bytes(data))
    return path


VDI_DAMAGE = {
    "truncated header": "too short",
    "bad signature": "bad signature",
    "block map past the image": "block map",
    "two blocks share data": "both pointing to data block",
}


# -- the VM runner ------------------------------------------------------------------------------

def test_missing_iso(runtime, tmp_path):
    iso = tmp_path / "nowhere.iso"
    result = headless(runtime, vm_name(), "--iso", str(iso))
    assert_one_error(result, "headbox-vm", str(iso))


@pytest.mark.parametrize("content", ["random", "empty", "text"])
def test_corrupt_iso(runtime, tmp_path, content):
    iso = tmp_path / "broken.iso"
    iso.write_bytes({"random": os.urandom(MiB), "empty": b"",
                     "text": b"this is not an ISO image\n" * 4000}[content])
    before = iso.read_bytes()
    result = headless(runtime, vm_name(), "--iso", str(iso))
    line = assert_one_error(result, "headbox-vm", str(iso))
    assert "ISO" in line
    assert iso.read_bytes() == before


def test_missing_vdi(runtime, tmp_path):
    disk = tmp_path / "nowhere.vdi"
    result = headless(runtime, vm_name(), "--hdd", str(disk))
    assert_one_error(result, "headbox-vm", str(disk))
    assert not disk.exists()


@pytest.mark.parametrize("how", list(VDI_DAMAGE))
def test_corrupt_vdi(runtime, tmp_path, how):
    disk = damage(good_vdi(tmp_path / "disk.vdi"), how)
    before = disk.read_bytes()
    result = headless(runtime, vm_name(), "--hdd", str(disk))
    line = assert_one_error(result, "headbox-vm", str(disk), VDI_DAMAGE[how])
    assert disk.read_bytes() == before, "the failed start changed the image"
    # The device process on its own says the same.
    alone = run(runtime, "devices", LaunchSpec(vm_name(), drives=[Drive(0, 0, "hdd", str(disk))]))
    assert assert_one_error(alone, "headbox-devices", str(disk)).split(": error: ", 1)[1] \
        == line.split(": error: ", 1)[1]
    assert disk.read_bytes() == before


def test_more_ram_than_the_host_has(runtime):
    result = headless(runtime, vm_name(), "--memory", "10000000")
    assert_one_error(result, "headbox-vm", "10000000 MiB", "available")
    vm_id = vm_name()
    alone = run(runtime, "vcpu", LaunchSpec(vm_id, accel="tcg", memory_mib=10000000, device_process=False))
    assert_one_error(alone, "headbox-vcpu", "10000000 MiB")
    assert not shm_of(vm_id)


def test_image_in_use_by_a_running_vm(runtime, tmp_path):
    disk = good_vdi(tmp_path / "shared.vdi")
    first_id, second_id = vm_name(), vm_name()
    first = subprocess.Popen([sys.executable, "-m", "services.headless", "--name", first_id, "--accel", "tcg",
                              "--hdd", str(disk)], env=runtime, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    client = ControlClient(endpoint(first_id, "control-vcpu"), timeout_ms=2000)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(endpoint(first_id, "control-devices")[len("ipc://"):]):
            assert first.poll() is None, f"the first VM ended: {first.communicate()[1]}"
            assert time.monotonic() < deadline, "the first VM's device process did not start"
            time.sleep(0.05)

        result = headless(runtime, second_id, "--hdd", str(disk))
        assert_one_error(result, "headbox-vm", str(disk), "in use")
        alone = run(runtime, "devices", LaunchSpec(vm_name(), drives=[Drive(0, 0, "hdd", str(disk))]))
        assert_one_error(alone, "headbox-devices", str(disk), "in use")

        # The first VM runs on, and its image is still locked by it.
        time.sleep(1.0)
        assert first.poll() is None, f"the first VM ended: {first.communicate()[1]}"
        assert client.call(ops.Status())["state"] == "running"
        devices = ControlClient(endpoint(first_id, "control-devices"), timeout_ms=2000)
        try:
            devices.call(ops.Status())
        finally:
            devices.close()
        client.call(ops.PowerOff())
        out, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:    # a failed test: power off, as killing the runner orphans its VM
            try:
                client.call(ops.PowerOff())
                first.communicate(timeout=30)
            except Exception:
                first.kill()
                first.wait()
        client.close()
    assert first.returncode == 0, err
    assert "Traceback" not in out + err and ": error: " not in err, err
    assert not shm_of(first_id)
    # Nothing was lost: the image opens cleanly with what was written to it.
    image = vdi.open(str(disk), readonly=True)
    try:
        assert image.read(0, 512) == b"\xab" * 512 and image.read(5 * MiB, 512) == b"\xcd" * 512
    finally:
        image.close()


# -- the vCPU process ---------------------------------------------------------------------------

def test_no_firmware(runtime, tmp_path):
    vm_id = vm_name()
    missing = tmp_path / "nonexistent" / "bios.bin"
    result = run(runtime, "vcpu", LaunchSpec(vm_id, accel="tcg", firmware=str(missing), device_process=False))
    assert_one_error(result, "headbox-vcpu", str(missing), "seabios")
    assert not shm_of(vm_id)


def test_firmware_that_is_not_a_firmware_image(runtime, tmp_path):
    vm_id = vm_name()
    bogus = tmp_path / "bios.bin"
    bogus.write_bytes(b"not a BIOS\n")
    result = run(runtime, "vcpu", LaunchSpec(vm_id, accel="tcg", firmware=str(bogus), device_process=False))
    assert_one_error(result, "headbox-vcpu", str(bogus))
    assert not shm_of(vm_id)
