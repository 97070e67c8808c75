"""The control channel of every VM process (services/ipc/control.py, ops.py): typed requests on the
wire, a server that answers anything with one line, a client that raises typed errors."""

from __future__ import annotations

import pytest

from services.ipc import ops
from services.ipc.control import (
    CONTROL_VERSION,
    ControlClient,
    ControlError,
    ControlServer,
    ControlUnavailable,
    pack_request,
    unpack_request,
)
from services.ipc.messages import ProtocolError, pack, unpack


def test_a_request_travels_as_its_operation_and_fields():
    message = ops.SerialInput(data=b"ls\n")
    assert unpack(pack_request(message)) == {"v": CONTROL_VERSION, "op": "serial-input", "data": b"ls\n",
                                             "device": "serial"}
    assert unpack_request(pack_request(message)) == message
    assert unpack_request(pack_request(ops.DirtyPages(areas=["ram"], pause=True))).pause is True


@pytest.mark.parametrize("raw,error", [
    (b"\xc1garbage", "not msgpack"),
    (pack(["status"]), "version 2"),
    (pack({"v": 1, "op": "status"}), "version 2"),
    (pack({"v": CONTROL_VERSION, "op": "frobnicate"}), "unknown control operation 'frobnicate'"),
    (pack({"v": CONTROL_VERSION, "op": "restore"}), "restore: missing field(s) state"),
    (pack({"v": CONTROL_VERSION, "op": "status", "extra": 1}), "status: unknown field(s) extra"),
])
def test_anything_else_is_a_protocol_error_in_one_line(raw, error):
    with pytest.raises(ProtocolError, match=error.replace("(", r"\(").replace(")", r"\)")):
        unpack_request(raw)


def test_the_server_answers_every_request_with_ok_or_one_line(tmp_path):
    def refuse(_request):
        raise ControlError("the VM must be paused for snapshot (it is running)")

    def crash(_request):
        raise KeyError("boom")

    server = ControlServer(f"ipc://{tmp_path}/control", {ops.Status: lambda r: {"state": "running"},
                                                        ops.Snapshot: refuse, ops.Reset: crash})
    try:
        assert server.answer(pack_request(ops.Status())) == {"ok": True, "state": "running"}
        assert server.answer(pack_request(ops.Snapshot())) == {
            "ok": False, "error": "the VM must be paused for snapshot (it is running)"}
        assert server.answer(pack_request(ops.Reset()))["ok"] is False
        assert server.answer(pack_request(ops.PowerOff())) == {
            "ok": False, "error": "this process does not serve poweroff"}
        assert server.answer(b"\xc1") == {"ok": False, "error": "the control request is not msgpack"}
    finally:
        server.close()


def test_the_client_raises_typed_errors(tmp_path):
    endpoint = f"ipc://{tmp_path}/control"
    server = ControlServer(endpoint, {ops.Status: lambda r: {"pid": 42},
                                      ops.Pause: lambda r: (_ for _ in ()).throw(ControlError("stuck"))})
    server.serve_in_thread("test-control")
    client = ControlClient(endpoint, timeout_ms=2000)
    try:
        assert client.call(ops.Status()) == {"pid": 42}
        with pytest.raises(ControlError, match="^stuck$"):
            client.call(ops.Pause())
        assert client.call(ops.Status()) == {"pid": 42}        # still usable after a refusal
    finally:
        client.close()
        server.close()
    silent = ControlClient(f"ipc://{tmp_path}/nobody", timeout_ms=100)
    try:
        with pytest.raises(ControlUnavailable, match="no answer to status"):
            silent.call(ops.Status())
        with pytest.raises(ControlUnavailable):              # the socket was renewed: it can send again
            silent.call(ops.Status())
    finally:
        silent.close()
