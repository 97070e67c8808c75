"""VRDE TCP/Ports and TCP/Address: VirtualBox's bind rule (research/vrde.md §4.2); the list syntax is
services/ipc/vrde.py's. Ports are tried in list order; the first port where at least one address
binds wins; none free -> port 0."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from services.ipc.vrde import DEFAULT_PORT, ports_in_order

log = logging.getLogger("headbox.vrdp")

SNDBUF, RCVBUF = 64 * 1024, 32 * 1024


@dataclass
class Listener:
    port: int
    sockets: list[socket.socket]

    @property
    def families(self) -> str:
        kinds = {s.family for s in self.sockets}
        if kinds == {socket.AF_INET, socket.AF_INET6}:
            return "IPv4 and IPv6"
        return "IPv6" if socket.AF_INET6 in kinds else "IPv4"

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


def _addresses(address: str, port: int) -> list[tuple]:
    try:
        infos = socket.getaddrinfo(address or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    except socket.gaierror as exc:
        log.warning("TCP/Address '%s' cannot be resolved: %s", address, exc.strerror)
        return []
    seen, result = set(), []
    for family, kind, proto, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in seen:
            seen.add((family, sockaddr))
            result.append((family, kind, proto, sockaddr))
    return result


def _bind_one(family, kind, proto, sockaddr) -> socket.socket | None:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind(sockaddr)
        sock.listen(16)
    except OSError:
        sock.close()
        return None
    return sock


def bind_listener(ports: str, address: str) -> Listener | None:
    """Sockets on every address of the first port of `ports` that binds; None when no port does."""
    for port in ports_in_order(ports):
        sockets = [s for s in (_bind_one(*a) for a in _addresses(address, port)) if s is not None]
        if sockets:
            listener = Listener(port, sockets)
            log.info("TCP server listening on port %d (%s).", port, listener.families)
            return listener
    log.warning("TCP server failed to bind to a port: default %d, range [%s]", DEFAULT_PORT, ports)
    return None
