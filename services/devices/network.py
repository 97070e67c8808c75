"""The NAT end of each adapter's net channel: frames from the guest's `to_nat` ring into
libslirp (or the host-resolver DNS), frames from libslirp into `to_guest`, one doorbell per batch.
The device loop polls libslirp's sockets with its own; nothing here starts a thread."""

from __future__ import annotations

import logging
import select
import time
from collections import deque

import zmq

from services.devices.nat.host_dns import HostResolverDns
from services.devices.nat.slirp import NatConfig, Slirp, SlirpError
from services.ipc.frames import Doorbell, DoorbellListener, rings
from services.ipc.naming import NET_REGIONS, endpoint, shm_name
from services.ipc.network import NetAdapter, NetworkError, PortForward, nat_addresses
from services.ipc.shm import SharedRegion

log = logging.getLogger("headbox.devices.net")

PENDING_LIMIT = 1024           # frames held for a guest whose ring is full; more are dropped
RETRY_S = 1                    # a port-forwarding rule whose host port is taken is tried again
FRAMES_PER_TURN = 512          # from one adapter per loop turn, so the io channel stays served
_TO_ZMQ = ((select.POLLIN, zmq.POLLIN), (select.POLLPRI, zmq.POLLIN), (select.POLLOUT, zmq.POLLOUT))
_FROM_ZMQ = ((zmq.POLLIN, select.POLLIN), (zmq.POLLOUT, select.POLLOUT), (zmq.POLLERR, select.POLLERR))


class NatAdapter:
    def __init__(self, adapter: NetAdapter, region: SharedRegion, doorbell: Doorbell):
        self.adapter, self.region, self.doorbell = adapter, region, doorbell
        self.to_nat, self.to_guest = rings(region.view())
        self.pending: deque[bytes] = deque()
        self.rung = False
        self.dropped = 0
        addresses = nat_addresses(adapter.nat_network)
        config = NatConfig(network=addresses["network"], prefix=int(addresses["prefix"]),
                           host=addresses["host"], dhcp_start=addresses["guest"],
                           nameserver=addresses["nameserver"], dns=not adapter.dns_host_resolver,
                           tftp_path=adapter.tftp_prefix or None, bootfile=adapter.tftp_file or None)
        self.slirp = Slirp(config, self._to_guest, on_guest_error=self._guest_error)
        self.dns = HostResolverDns(addresses["nameserver"]) if adapter.dns_host_resolver else None
        self.forwards: dict[str, PortForward] = {}
        # Rules whose host port is taken (by another program, or by this VM's teleport source on
        # the same host until it lets go): tried again every RETRY_S, as VirtualBox keeps running.
        self.unbound: list[PortForward] = []
        self.retry_at = 0.0
        for rule in adapter.forwards:
            self._bind_or_defer(rule)

    def _bind_or_defer(self, rule: PortForward) -> None:
        try:
            self._bind(rule)
        except NetworkError as error:
            if rule not in self.unbound:
                log.error("adapter %d: %s; trying again every %d s", self.adapter.slot + 1, error, RETRY_S)
                self.unbound.append(rule)
            self.retry_at = time.monotonic() + RETRY_S
        else:
            if rule in self.unbound:
                self.unbound.remove(rule)

    def retry_unbound(self) -> None:
        if self.unbound and time.monotonic() >= self.retry_at:
            for rule in list(self.unbound):
                self._bind_or_defer(rule)

    # -- port forwarding ---------------------------------------------------------------------
    def add_forward(self, rule: PortForward) -> None:
        if rule.name in self.forwards or any(r.name == rule.name for r in self.unbound):
            raise NetworkError(f"a port-forwarding rule named '{rule.name}' exists already")
        self._bind(rule)

    def _bind(self, rule: PortForward) -> None:
        try:
            self.slirp.add_forward(rule.protocol == "udp", rule.host_ip, rule.host_port,
                                   rule.guest_ip, rule.guest_port)
        except SlirpError as error:
            raise NetworkError(f"port-forwarding rule '{rule.name}': {error}") from None
        self.forwards[rule.name] = rule
        log.info("adapter %d: forwarding %s %s:%d to guest port %d", self.adapter.slot + 1,
                 rule.protocol, rule.host_ip or "*", rule.host_port, rule.guest_port)

    def remove_forward(self, name: str) -> None:
        waiting = [r for r in self.unbound if r.name == name]
        if waiting:
            self.unbound.remove(waiting[0])
            return
        rule = self.forwards.pop(name, None)
        if rule is None:
            raise NetworkError(f"no port-forwarding rule named '{name}'")
        self.slirp.remove_forward(rule.protocol == "udp", rule.host_ip, rule.host_port)

    # -- frames ------------------------------------------------------------------------------
    def _guest_error(self, message: str) -> None:
        log.warning("adapter %d: the guest sent a bad frame: %s", self.adapter.slot + 1, message)

    def _to_guest(self, frame: bytes) -> None:
        if not self.pending and self.to_guest.push(frame):
            self.rung = True
        elif len(self.pending) < PENDING_LIMIT:
            self.pending.append(frame)
        else:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:
                log.warning("adapter %d: %d frames for the guest dropped (it is not taking them)",
                            self.adapter.slot + 1, self.dropped)

    def from_guest(self) -> None:
        ring, dns, slirp = self.to_nat, self.dns, self.slirp
        for _ in range(FRAMES_PER_TURN):
            try:
                frame = ring.peek()
            except ValueError as error:
                log.error("adapter %d: %s; the ring is emptied", self.adapter.slot + 1, error)
                ring.clear()
                return
            if frame is None:
                return
            ring.pop()
            reply = dns.answer(frame) if dns is not None else None
            if reply is not None:
                self._to_guest(reply)
            else:
                slirp.input(frame)

    def flush(self) -> None:
        """Frames held back into the guest's ring as it empties, then the doorbell."""
        while self.pending and self.to_guest.push(self.pending[0]):
            self.pending.popleft()
            self.rung = True
        if self.rung:
            self.rung = False
            self.doorbell.ring(self.adapter.slot)

    def close(self) -> None:
        self.slirp.close()
        self.region.close()


class Network:
    """Every NAT adapter of the VM, driven by the device loop."""

    def __init__(self, vm_id: str, adapters: list[NetAdapter]):
        self.adapters: dict[int, NatAdapter] = {}
        self.listener = self.doorbell = None
        nat = [a for a in adapters if a.attachment == "nat"]
        if not nat:
            return
        self.listener = DoorbellListener(endpoint(vm_id, "net-out"))
        self.doorbell = Doorbell(endpoint(vm_id, "net-in"))
        for adapter in nat:
            try:
                region = SharedRegion.open(shm_name(vm_id, NET_REGIONS[adapter.slot]))
            except FileNotFoundError:
                self.close()
                raise ValueError(f"no frame rings for network adapter {adapter.slot + 1} of VM {vm_id} "
                                 "(is its vCPU process running?)") from None
            try:
                self.adapters[adapter.slot] = NatAdapter(adapter, region, self.doorbell)
            except SlirpError as error:
                region.close()
                self.close()
                raise ValueError(f"network adapter {adapter.slot + 1}: {error}") from None

    def poll_items(self) -> tuple[list, int]:
        """zmq.poll items for the doorbells and libslirp's sockets, and the timeout (ms)."""
        if self.listener is None:
            return [], 500
        items, timeout = [(self.listener.socket, zmq.POLLIN)], 500
        self._fds = {}
        for adapter in self.adapters.values():
            fds, wait = adapter.slirp.poll_fds()
            timeout = min(timeout, wait)
            if adapter.pending:
                timeout = min(timeout, 2)
            if adapter.unbound:
                timeout = min(timeout, int(RETRY_S * 1000))
            for fd, events in fds:
                wanted = 0
                for ours, theirs in _TO_ZMQ:
                    if events & ours:
                        wanted |= theirs
                items.append((fd, wanted))
                self._fds[fd] = adapter
        return items, max(timeout, 0)

    def dispatch(self, ready: dict) -> None:
        """After a poll: doorbells, then each NAT's sockets and timers, then frames out."""
        if self.listener is None:
            return
        if self.listener.socket in ready:
            self.listener.take()
        for adapter in self.adapters.values():    # every ring, rung or not: a look costs two loads
            adapter.from_guest()
        revents: dict[NatAdapter, dict[int, int]] = {a: {} for a in self.adapters.values()}
        for fd, adapter in self._fds.items():
            got = ready.get(fd, 0)
            if got:
                revents[adapter][fd] = sum(theirs for ours, theirs in _FROM_ZMQ if got & ours)
        for adapter, events in revents.items():
            adapter.slirp.dispatch(events)
            adapter.flush()
            adapter.retry_unbound()

    def port_forward(self, slot: int, rule: str, delete: bool) -> None:
        adapter = self.adapters.get(slot)
        if adapter is None:
            raise NetworkError(f"network adapter {slot + 1} is not attached to NAT")
        if delete:
            adapter.remove_forward(rule)
        else:
            adapter.add_forward(PortForward.parse(rule))

    def snapshot(self) -> dict:
        return {str(slot): {"slirp": a.slirp.save_state(), "forwards": [f.text() for f in a.forwards.values()]}
                for slot, a in self.adapters.items()}

    def restore(self, state: dict) -> None:
        for slot, adapter in self.adapters.items():
            saved = state.get(str(slot))
            if saved is None:
                continue
            try:
                adapter.slirp.load_state(bytes(saved["slirp"]))
            except SlirpError as error:
                raise ValueError(f"network adapter {slot + 1}: {error}") from None

    def close(self) -> None:
        for adapter in self.adapters.values():
            adapter.close()
        self.adapters = {}
        if self.listener is not None:
            self.listener.close()
            self.doorbell.close()
            self.listener = self.doorbell = None
