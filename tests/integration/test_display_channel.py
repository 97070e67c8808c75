"""The display channel: a subscriber learns the mode and the damaged rectangles, and finds the
pixels in the shared surface; nobody subscribing costs no rendering."""

import os
import time
import uuid

import msgpack
import zmq

from services.ipc import ops
from services.ipc.control import ControlClient
from services.ipc.messages import DISPLAY_VERSION
from services.ipc.naming import endpoint, shm_name
from services.ipc.shm import SharedRegion
from services.ipc.spec import LaunchSpec
from services.ipc.surface import frame_view, read_header
from tests.support.vm_processes import start


def test_seabios_screen_reaches_a_subscriber(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    vm_id = "ds" + uuid.uuid4().hex[:6]
    vcpu = start("vcpu", LaunchSpec(vm_id, memory_mib=64, accel="tcg", device_process=False), tmp_path,
                 env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    control = None
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(endpoint(vm_id, "display")[len("ipc://"):]):
            assert vcpu.poll() is None and time.monotonic() < deadline, "the vCPU process did not start"
            time.sleep(0.05)
        sub.connect(endpoint(vm_id, "display"))
        updates, region, drawn = [], None, None
        try:
            while time.monotonic() < deadline and drawn is None:
                if not sub.poll(500):
                    continue
                version, sequence, width, height, bpp, changed, rects = msgpack.unpackb(sub.recv())
                assert version == DISPLAY_VERSION
                updates.append((width, height, changed, rects))
                if (width, height) != (720, 400) or not rects:
                    continue
                region = region or SharedRegion.open(shm_name(vm_id, "surface"))
                header = read_header(region)
                assert (header.width, header.height, header.sequence >= sequence) == (720, 400, True)
                frame = frame_view(region, header)
                # SeaBIOS's banner: some damaged rectangle now holds lit pixels.
                if any(frame[y:y + h, x:x + w].any() for x, y, w, h in rects):
                    drawn = rects
            assert drawn, f"no text-mode damage with drawn pixels arrived: {updates[-5:]}"
            assert any(changed for _, _, changed, _ in updates), "the mode change was announced"
        finally:
            if region is not None:
                region.close()
        control = ControlClient(endpoint(vm_id, "control-vcpu"))
        control.call(ops.PowerOff())
        assert vcpu.wait(30) == 0
    finally:
        sub.close()
        if control:
            control.close()
        if vcpu.poll() is None:
            vcpu.kill()
            vcpu.wait()
