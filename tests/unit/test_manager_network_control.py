"""controlvm setlinkstate<N> and natpf<N> on a running VM, with the VM's processes replaced by a
recorder: the requests they are sent, what is stored, and that a refusal stores nothing."""

import threading

import pytest

from services.ipc import ops
from services.manager import netcontrol
from services.manager.errors import (
    E_FAIL,
    E_INVALIDARG,
    INVALID_VM_STATE,
    IPRT_ERROR,
    ManagerError,
)
from services.manager.jobs import Jobs
from services.manager.runtime import Runtime
from services.manager.settings import Settings
from services.manager.settings.changes import apply_changes
from services.manager.settings.model import Machine, Nic
from services.manager.states import VmRun
from services.manager.states import VmState as S


class Processes:
    """The VM's control sockets: records each request; `refuse` makes a request type fail as the
    devices process fails it (ControlError, which vm_call turns into E_FAIL)."""

    def __init__(self):
        self.sent = []
        self.refuse = None

    def __call__(self, vm_id, process, request, timeout_ms=5000):
        if self.refuse is not None and self.refuse(request):
            raise ManagerError(E_FAIL, "port-forwarding rule 'web': Address already in use")
        self.sent.append((process, request))
        return {}


@pytest.fixture
def vm(tmp_path, monkeypatch):
    home = str(tmp_path / "home")
    runtime = Runtime(home, None, threading.RLock(), Jobs())
    runtime.settings = Settings(home, vm_state=runtime.state_of)
    uuid = runtime.settings.createvm(name="vm", ostype="Debian_64", register=True)["uuid"]
    runtime.settings.modifyvm(vm="vm", changes={"nic2": "null", "natpf1": "ssh,tcp,,2222,,22"})
    processes = Processes()
    monkeypatch.setattr(netcontrol, "vm_call", processes)
    runtime.processes = processes
    runtime.run = runtime.vms[uuid] = VmRun(uuid=uuid, name="vm")
    runtime.run.move(S.STARTING)
    runtime.run.move(S.RUNNING)
    return runtime


def nic(runtime, n=1) -> dict:
    return runtime.settings.showvminfo(vm="vm")["nics"][n - 1]


def test_natpf_adds_a_rule_to_the_running_nat_and_stores_it(vm):
    vm.controlvm(vm="vm", action="natpf1", args=["web,tcp,127.0.0.1,8080,,80"])
    assert vm.processes.sent == [("devices", ops.PortForward(slot=0, rule="web,tcp,127.0.0.1,8080,,80"))]
    assert nic(vm)["nat"]["forwards"] == ["ssh,tcp,,2222,,22", "web,tcp,127.0.0.1,8080,,80"]


def test_natpf_delete_removes_it(vm):
    vm.controlvm(vm="vm", action="natpf1", args=["delete", "ssh"])
    assert vm.processes.sent == [("devices", ops.PortForward(slot=0, rule="ssh", delete=True))]
    assert nic(vm)["nat"]["forwards"] == []


def test_a_rule_without_a_name_is_sent_with_virtualbox_s_name(vm):
    vm.controlvm(vm="vm", action="natpf1", args=[",udp,,5353,,53"])
    assert vm.processes.sent == [("devices", ops.PortForward(slot=0, rule="udp_5353_53,udp,,5353,,53"))]


def test_a_rule_the_devices_process_refuses_is_one_error_and_not_stored(vm):
    vm.processes.refuse = lambda request: isinstance(request, ops.PortForward)
    with pytest.raises(ManagerError) as caught:
        vm.controlvm(vm="vm", action="natpf1", args=["web,tcp,,8080,,80"])
    assert (caught.value.code, caught.value.message) == (
        IPRT_ERROR, "port-forwarding rule 'web': Address already in use")
    assert nic(vm)["nat"]["forwards"] == ["ssh,tcp,,2222,,22"]


@pytest.mark.parametrize("args,message", [
    (["ssh,tcp,,2223,,22"], "A NAT rule of this name already exists"),
    (["other,tcp,,2222,,22"], "A NAT rule for this host port and this host IP already exists"),
    (["delete", "ghost"], "A NAT rule of this name does not exist"),
    (["web,tcp,,80"], "bad port-forwarding rule 'web,tcp,,80' (expected name,tcp|udp,[hostip],hostport,"
                      "[guestip],guestport)"),
    ([], "natpf1 takes a rule (name,tcp|udp,[hostip],hostport,[guestip],guestport) or delete and a rule's name"),
])
def test_a_bad_rule_is_refused_before_the_vm_hears_of_it(vm, args, message):
    with pytest.raises(ManagerError) as caught:
        vm.controlvm(vm="vm", action="natpf1", args=args)
    assert (caught.value.code, caught.value.message) == (E_INVALIDARG, message)
    assert vm.processes.sent == [] and nic(vm)["nat"]["forwards"] == ["ssh,tcp,,2222,,22"]


def test_setlinkstate_pulls_and_plugs_the_cable(vm):
    vm.controlvm(vm="vm", action="setlinkstate2", args=["off"])
    vm.controlvm(vm="vm", action="setlinkstate2", args=["on"])
    assert vm.processes.sent == [("vcpu", ops.LinkState(slot=1, up=False)), ("vcpu", ops.LinkState(slot=1, up=True))]
    vm.controlvm(vm="vm", action="setlinkstate1", args=["off"])
    assert (nic(vm, 1)["cable"], nic(vm, 2)["cable"]) == (False, True)
    with pytest.raises(ManagerError, match="^setlinkstate1 takes on or off$"):
        vm.controlvm(vm="vm", action="setlinkstate1", args=["up"])


def test_a_disabled_adapter_has_no_card_to_tell_but_its_settings_change(vm):
    vm.controlvm(vm="vm", action="setlinkstate3", args=["off"])
    vm.controlvm(vm="vm", action="natpf3", args=["x,tcp,,3000,,30"])
    assert vm.processes.sent == [] and nic(vm, 3)["cable"] is False
    assert nic(vm, 3)["nat"]["forwards"] == ["x,tcp,,3000,,30"]


def test_a_vm_that_is_not_running_is_refused_as_virtualbox_refuses_it(vm):
    vm.run.move(S.POWERED_OFF)
    for action, args in (("natpf1", ["web,tcp,,8080,,80"]), ("setlinkstate1", ["off"])):
        with pytest.raises(ManagerError) as caught:
            vm.controlvm(vm="vm", action=action, args=args)
        assert (caught.value.code, caught.value.message) == (INVALID_VM_STATE, "Machine 'vm' is not currently running")
    assert vm.processes.sent == []


def test_a_change_in_several_steps_is_undone_when_one_is_refused(vm):
    """push() undoes what it sent before a refusal (one modifyvm-style change may need several)."""
    old = Machine(uuid="u", name="vm", nics=[Nic("nat", "82540EM", "080027000001")])
    new = apply_changes(old, {"natpf1": ["a,tcp,,1000,,10", "b,tcp,,1001,,11"], "cableconnected1": False})
    vm.processes.refuse = lambda request: isinstance(request, ops.PortForward) and request.rule.startswith("b,")
    with pytest.raises(ManagerError):
        netcontrol.push("id", old, new)
    assert vm.processes.sent == [("vcpu", ops.LinkState(slot=0, up=False)),
                                 ("devices", ops.PortForward(slot=0, rule="a,tcp,,1000,,10")),
                                 ("devices", ops.PortForward(slot=0, rule="a", delete=True)),
                                 ("vcpu", ops.LinkState(slot=0, up=True))]
