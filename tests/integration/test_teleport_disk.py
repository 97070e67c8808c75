"""Teleporting a Linux guest while it writes to its VDI disk (issue 6, acceptance 2): the guest writes
numbered sectors straight to /dev/sda in a loop; halfway the VM moves to a target that opens the
same (shared) image; the loop finishes there. Afterwards `qemu-img check` is clean and every sector
holds exactly what the guest wrote."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time

from services.demo.linux_iso import linux_iso
from services.images.image import create_disk
from services.teleport import wire
from services.teleport.hardware import hardware_config
from services.teleport.source import teleport_out
from services.teleport.target import teleport_in
from tests.support.serial_guest import Budget, GuestVm, VmError, qemu_img
from tests.waiting import free_port

SECTORS = 300
SECTOR = 512


def sector(i: int) -> bytes:
    line = b"teleport-disk sector %06d of %06d\n" % (i, SECTORS)
    return line + b"." * (SECTOR - len(line) - 1) + b"\n"


WRITER = ("(i=0; while [ $i -lt %d ]; do "
          "printf 'teleport-disk sector %%06d of %%06d\\n' $i %d > /tmp/s; "
          "dd if=/dev/zero bs=1 count=$((511 - $(wc -c < /tmp/s))) 2>/dev/null | tr '\\0' . >> /tmp/s; "
          "echo >> /tmp/s; "
          "dd if=/tmp/s of=/dev/sda bs=512 seek=$i conv=notrunc,fsync 2>/dev/null; "
          "i=$((i+1)); done; echo WRITER-DONE-$i) &" % (SECTORS, SECTORS))


def test_teleport_while_the_guest_writes_its_disk(tmp_path):
    budget = Budget(420)
    disk = tmp_path / "disk.vdi"
    create_disk(str(disk), 32)
    drives = [f"0:0:hdd:{disk}", f"1:0:dvd:{linux_iso()}"]
    source = GuestVm("source", drives, tmp_path, budget)
    target = GuestVm("target", drives, tmp_path, budget)
    target.processes.spec.incoming = True
    try:
        source.start()
        source.boot()
        source.type(WRITER)
        # Let the loop get going (the first sectors reach the disk) before the move.
        source.wait_for(b"guest# ", 30, what="the prompt after starting the writer")
        time.sleep(3)
        target.start()
        port = free_port()
        result = {}

        def wait_for_source():
            try:
                result["target"] = teleport_in(target.vm_id, hardware_config(target.processes.spec), "127.0.0.1",
                                               port, wire.hash_password(""), wait_s=60,
                                               on_listening=lambda p: result.setdefault("listening", True))
            except Exception as error:      # noqa: BLE001 - reported by the assertion below
                result["error"] = error

        waiter = threading.Thread(target=wait_for_source, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 10
        while "listening" not in result and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = teleport_out(source.vm_id, hardware_config(source.processes.spec), "127.0.0.1", port)
        waiter.join(30)
        assert "error" not in result, result.get("error")
        print(f"teleport with disk writes: downtime {stats.downtime_ms:.0f} ms {stats.phases}")
        before = bytes(source.serial.poll())
        assert b"WRITER-DONE-%d" % SECTORS not in before, "the writer finished before the move: nothing was tested"
        target.wait_for(b"WRITER-DONE-%d" % SECTORS, 180, what="the writer's end on the target")
        out = target.run(f"dd if=/dev/sda bs=512 count={SECTORS} 2>/dev/null | sha256sum")
        expected = hashlib.sha256(b"".join(sector(i) for i in range(SECTORS))).hexdigest()
        assert expected in out, f"the guest reads back other bytes than it wrote: {out!r}"
        target.type("poweroff -f")
        deadline = time.monotonic() + 30
        while target.processes.vcpu.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        target.processes.wait()
    except VmError:
        print(source.diagnostics())
        print(target.diagnostics())
        raise
    finally:
        source.close()
        target.close()
    check = subprocess.run([qemu_img(), "check", str(disk)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    raw = tmp_path / "disk.raw"
    subprocess.run([qemu_img(), "convert", "-O", "raw", str(disk), str(raw)], check=True)
    data = raw.read_bytes()[:SECTORS * SECTOR]
    bad = [i for i in range(SECTORS) if data[i * SECTOR:(i + 1) * SECTOR] != sector(i)]
    assert not bad, f"sectors {bad[:10]} do not hold what the guest wrote"
