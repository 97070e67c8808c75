"""One user-mode NAT per network adapter: a ctypes binding to libslirp (QEMU's NAT engine, libslirp0).

Guest frames go in through input(), frames for the guest leave through a callback; the owner's loop
polls the host sockets poll_fds() names and hands the results back to dispatch()."""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import logging
import os
import select
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("headbox.devices.nat")


class SlirpError(RuntimeError):
    """A NAT problem, worded as one line for the user."""


@dataclass(frozen=True)
class NatConfig:
    """The addressing of one NAT network; the defaults are VirtualBox's (10.0.2.0/24)."""

    network: str = "10.0.2.0"
    prefix: int = 24
    host: str = "10.0.2.2"              # the gateway: the host as the guest sees it
    dhcp_start: str = "10.0.2.15"       # the first address DHCP hands out
    nameserver: str = "10.0.2.3"
    dns: bool = True                    # False: slirp's DNS proxy is off (a host-resolver DNS answers)
    hostname: str | None = None         # DHCP option 12, offered to the guest
    domain: str | None = None           # DHCP option 15
    tftp_path: str | None = None        # the folder TFTP serves; None: no TFTP
    tftp_server_name: str | None = None
    bootfile: str | None = None
    mtu: int = 1500

    def __post_init__(self) -> None:
        net = self.ip_network
        for what, text in (("host", self.host), ("DHCP start", self.dhcp_start),
                           ("name server", self.nameserver)):
            address = _ipv4(text, f"NAT {what} address")
            if address not in net or address in (net.network_address, net.broadcast_address):
                raise SlirpError(f"NAT {what} address {text} is not a host address of {net}")
        if not 68 <= self.mtu <= 65521:
            raise SlirpError(f"NAT MTU {self.mtu} is outside 68..65521")
        if self.bootfile is not None and len(self.bootfile.encode()) >= 128:
            raise SlirpError("NAT boot file name is longer than 127 bytes")

    @property
    def ip_network(self) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(f"{self.network}/{self.prefix}")
        except ValueError:
            raise SlirpError(f"NAT network {self.network}/{self.prefix} is not an IPv4 network "
                             "(e.g. 10.0.2.0/24)") from None

    @classmethod
    def from_natnet(cls, natnet: str, **settings) -> NatConfig:
        """VirtualBox's --natnet "10.0.3.0/24": the host is .2, the name server .3, the guest .15."""
        try:
            net = ipaddress.IPv4Network(natnet.strip(), strict=False)
        except ValueError:
            raise SlirpError(f"--natnet {natnet!r} is not an IPv4 network such as 10.0.3.0/24") from None
        if net.num_addresses < 32:
            raise SlirpError(f"--natnet {natnet} is too small: the guest gets .15, use a /27 or larger")
        base = net.network_address
        return cls(network=str(base), prefix=net.prefixlen, host=str(base + 2),
                   dhcp_start=str(base + 15), nameserver=str(base + 3), **settings)


def _ipv4(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise SlirpError(f"{what} {text!r} is not an IPv4 address") from None


# -- The C interface of libslirp 4.7.0 (libslirp.h) ----------------------------------------------

_u32, _int, _bool, _ptr, _str, _size = (ctypes.c_uint32, ctypes.c_int, ctypes.c_bool, ctypes.c_void_p,
                                        ctypes.c_char_p, ctypes.c_size_t)
_in6 = _u32 * 4       # glibc's in6_addr is a union with uint32_t members: 4-byte aligned, as here


class _InAddr(ctypes.Structure):
    _fields_ = [("s_addr", _u32)]                      # network byte order


def _in_addr(address: ipaddress.IPv4Address | None) -> _InAddr:
    # Read the network-order bytes in native order, so that memory holds them unchanged.
    return _InAddr(0 if address is None else int.from_bytes(address.packed, sys.byteorder))


class _SlirpConfig(ctypes.Structure):
    _fields_ = [
        ("version", _u32), ("restricted", _int), ("in_enabled", _bool),
        ("vnetwork", _InAddr), ("vnetmask", _InAddr), ("vhost", _InAddr),
        ("in6_enabled", _bool), ("vprefix_addr6", _in6), ("vprefix_len", ctypes.c_uint8),
        ("vhost6", _in6), ("vhostname", _str), ("tftp_server_name", _str), ("tftp_path", _str),
        ("bootfile", _str), ("vdhcp_start", _InAddr), ("vnameserver", _InAddr),
        ("vnameserver6", _in6), ("vdnssearch", _ptr), ("vdomainname", _str),
        ("if_mtu", _size), ("if_mru", _size), ("disable_host_loopback", _bool), ("enable_emu", _bool),
        ("outbound_addr", _ptr), ("outbound_addr6", _ptr),          # version 2
        ("disable_dns", _bool),                                     # version 3
        ("disable_dhcp", _bool),                                    # version 4
    ]


_CB = ctypes.CFUNCTYPE
_WriteCb = _CB(ctypes.c_ssize_t, _ptr, _size, _ptr)
_ReadCb = _CB(ctypes.c_ssize_t, _ptr, _size, _ptr)
_TimerCb = _CB(None, _ptr)
_AddPollCb = _CB(_int, _int, _int, _ptr)
_GetREventsCb = _CB(_int, _int, _ptr)
_FdCb = _CB(None, _int, _ptr)


class _SlirpCb(ctypes.Structure):
    _fields_ = [
        ("send_packet", _WriteCb), ("guest_error", _CB(None, _str, _ptr)),
        ("clock_get_ns", _CB(ctypes.c_int64, _ptr)), ("timer_new", _CB(_ptr, _ptr, _ptr, _ptr)),
        ("timer_free", _CB(None, _ptr, _ptr)), ("timer_mod", _CB(None, _ptr, ctypes.c_int64, _ptr)),
        ("register_poll_fd", _FdCb), ("unregister_poll_fd", _FdCb), ("notify", _CB(None, _ptr)),
        ("init_completed", _ptr), ("timer_new_opaque", _ptr),      # version 4, left NULL
    ]


def _callback(field: str, function: Callable) -> ctypes._CFuncPtr:
    return dict(_SlirpCb._fields_)[field](function)


_SLIRP_IN, _SLIRP_OUT, _SLIRP_PRI, _SLIRP_ERR, _SLIRP_HUP = 1, 2, 4, 8, 16
# (slirp bit, poll bit) pairs; all are distinct powers of two, so a set of them sums to their OR.
_BITS = ((_SLIRP_IN, select.POLLIN), (_SLIRP_OUT, select.POLLOUT), (_SLIRP_PRI, select.POLLPRI),
         (_SLIRP_ERR, select.POLLERR), (_SLIRP_HUP, select.POLLHUP),
         (_SLIRP_ERR, select.POLLNVAL))       # a closed fd reads as an error: slirp drops that socket
_POLL_FROM_SLIRP = tuple(sum({p for s, p in _BITS[:3] if v & s}) for v in range(32))
_SLIRP_FROM_POLL = tuple(sum({s for s, p in _BITS if v & p}) for v in range(64))


@functools.cache
def _library() -> ctypes.CDLL:
    # PyDLL keeps the GIL across calls: libslirp has process-wide state (its clock, the host's DNS
    # address), so instances must not run concurrently, and every frame saves a GIL round trip.
    try:
        lib = ctypes.PyDLL("libslirp.so.0", use_errno=True)
    except OSError:
        raise SlirpError("the NAT engine libslirp is missing: install Debian's libslirp0") from None
    p, i = _ptr, _int
    for name, restype, argtypes in (
        ("slirp_new", p, [ctypes.POINTER(_SlirpConfig), ctypes.POINTER(_SlirpCb), p]),
        ("slirp_cleanup", None, [p]),
        ("slirp_input", None, [p, _str, i]),
        ("slirp_pollfds_fill", None, [p, ctypes.POINTER(_u32), _AddPollCb, p]),
        ("slirp_pollfds_poll", None, [p, i, _GetREventsCb, p]),
        ("slirp_add_hostfwd", i, [p, i, _InAddr, i, _InAddr, i]),
        ("slirp_remove_hostfwd", i, [p, i, _InAddr, i]),
        ("slirp_state_save", None, [p, _WriteCb, p]),
        ("slirp_state_load", i, [p, i, _ReadCb, p]),
        ("slirp_state_version", i, []),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


# libslirp keeps time in one process-wide 32-bit millisecond counter: counting from process start
# (not host boot) keeps it far from wrapping, and starting at 1 s keeps it off 0, its "unset" value.
_CLOCK_ORIGIN_NS = time.monotonic_ns() - 1_000_000_000


def nat_clock_ns() -> int:
    return time.monotonic_ns() - _CLOCK_ORIGIN_NS


def _guarded(fallback, doing: str) -> Callable[[Callable], Callable]:
    """For callbacks from C: an exception must never cross into libslirp; log it, return fallback."""
    def wrap(function: Callable) -> Callable:
        def guarded(*args):
            try:
                return function(*args)
            except Exception:
                log.exception("NAT: %s failed", doing)
                return fallback
        return guarded
    return wrap


_STATE_HEADER, _STATE_MAGIC = struct.Struct(">4sI"), b"SLRP"      # magic, slirp_state_version


# -- One NAT ------------------------------------------------------------------------------------

class Slirp:
    """One NAT instance. Single-threaded: send_to_guest runs inside input()/dispatch() and must not
    call back into this instance."""

    def __init__(self, config: NatConfig, send_to_guest: Callable[[bytes], None],
                 on_guest_error: Callable[[str], None] | None = None,
                 clock_ns: Callable[[], int] = nat_clock_ns) -> None:
        self._slirp: int | None = None
        lib = _library()
        self.config = config
        self._send_to_guest = send_to_guest
        self._on_guest_error = on_guest_error
        self._clock_ns = clock_ns
        self._last_clock_ns = 0
        self._timers: dict[int, list] = {}             # handle: [expiry in ms or None, fire()]
        self._next_timer = 1
        self._polled_fds: list[int] = []              # by the index slirp was given in poll_fds()
        self._polled: list[tuple[int, int]] = []
        self._ready: list[int] | None = None          # slirp revents by that index, in dispatch()
        self._slirp_input = lib.slirp_input
        # slirp keeps pointers to all of these: they live as long as the instance.
        report_guest_error = _guarded(None, "reporting a guest error")(self._cb_guest_error)
        self._callbacks = _SlirpCb(
            send_packet=_WriteCb(self._cb_send_packet),
            guest_error=_callback("guest_error", report_guest_error),
            clock_get_ns=_callback("clock_get_ns", self._cb_clock),
            timer_new=_callback("timer_new", _guarded(None, "creating a timer")(self._cb_timer_new)),
            timer_free=_callback("timer_free", self._cb_timer_free),
            timer_mod=_callback("timer_mod", self._cb_timer_mod),
            # Every fd is announced again on each poll_fds(): nothing to track between rounds.
            register_poll_fd=_FdCb(lambda fd, _: None),
            unregister_poll_fd=_FdCb(lambda fd, _: None),
            # Only guest forwards to application callbacks wait on this; none are set up.
            notify=_callback("notify", lambda _: None),
        )
        # -1 makes slirp leave that socket alone for the round.
        self._add_poll = _AddPollCb(_guarded(-1, "listing a socket to poll")(self._cb_add_poll))
        self._get_revents = _GetREventsCb(self._cb_get_revents)
        handle = lib.slirp_new(ctypes.byref(_c_config(config)), ctypes.byref(self._callbacks), None)
        if not handle:
            raise SlirpError(f"libslirp refused the NAT configuration for {config.ip_network}")
        self._slirp = handle
        # slirp's clock only advances in slirp_pollfds_poll: set it now, so sockets the guest opens
        # before the first dispatch() do not expire at once.
        lib.slirp_pollfds_poll(handle, 1, self._get_revents, None)

    def input(self, frame: bytes) -> None:
        """An Ethernet frame from the guest."""
        slirp = self._slirp
        if slirp is not None:
            self._slirp_input(slirp, frame, len(frame))

    def poll_fds(self, max_timeout_ms: int = 1000) -> tuple[list[tuple[int, int]], int]:
        """The (fd, select.POLL* events) slirp wants watched, and how long to wait at most (ms)."""
        self._polled_fds, self._polled = [], []
        if self._slirp is None:
            return [], max_timeout_ms
        timeout = ctypes.c_uint32(self._timer_timeout_ms(max_timeout_ms))
        _library().slirp_pollfds_fill(self._slirp, ctypes.byref(timeout), self._add_poll, None)
        return self._polled, timeout.value

    def dispatch(self, revents: dict[int, int] | None) -> None:
        """After polling: the select.POLL* events per ready fd (None/{} on a timeout); runs due timers."""
        if self._slirp is None:
            return
        if revents:
            self._ready = [_SLIRP_FROM_POLL[revents.get(fd, 0) & 63] for fd in self._polled_fds]
        try:
            _library().slirp_pollfds_poll(self._slirp, 0, self._get_revents, None)
        finally:
            self._ready = None
        self._run_due_timers()

    def add_forward(self, udp: bool, host_addr: str, host_port: int, guest_addr: str,
                    guest_port: int) -> None:
        """Forward host_addr:host_port ("" = all addresses) to guest_addr ("" = the DHCP guest)."""
        slirp = self._open_handle()
        host, guest = _host_address(host_addr), _in_addr(self._guest_address(guest_addr))
        _check_port(host_port, "host")
        _check_port(guest_port, "guest")
        ctypes.set_errno(0)
        if _library().slirp_add_hostfwd(slirp, int(udp), host, host_port, guest, guest_port) < 0:
            error = ctypes.get_errno()
            reason = f": {os.strerror(error)}" if error else ""
            raise SlirpError(f"host port {host_port} ({'udp' if udp else 'tcp'}, {host_addr or '0.0.0.0'}) "
                             f"is in use or not allowed{reason}")

    def remove_forward(self, udp: bool, host_addr: str, host_port: int) -> bool:
        """Stop a forward added with the same host address and port; False if there was none."""
        slirp = self._open_handle()
        return _library().slirp_remove_hostfwd(slirp, int(udp), _host_address(host_addr), host_port) == 0

    def save_state(self) -> bytes:
        slirp, lib = self._open_handle(), _library()
        chunks: list[bytes] = []

        @_guarded(-1, "saving the NAT state")
        def write(buf: int, size: int, _opaque: int | None) -> int:
            chunks.append(ctypes.string_at(buf, size))
            return size

        lib.slirp_state_save(slirp, _WriteCb(write), None)
        return _STATE_HEADER.pack(_STATE_MAGIC, lib.slirp_state_version()) + b"".join(chunks)

    def load_state(self, data: bytes) -> None:
        slirp, lib = self._open_handle(), _library()
        if len(data) <= _STATE_HEADER.size or data[:4] != _STATE_MAGIC:
            raise SlirpError("the saved NAT state is damaged or not a NAT state")
        _, version = _STATE_HEADER.unpack_from(data)
        if version != lib.slirp_state_version():
            raise SlirpError(f"the saved NAT state has version {version}; this libslirp "
                             f"reads version {lib.slirp_state_version()}")
        payload = bytes(data[_STATE_HEADER.size:])
        # Socket records only exist for guest forwards to application callbacks, which this binding
        # never sets up. libslirp would reject them, but only after sizing buffers from the blob.
        if payload[0] != 0:
            raise SlirpError("the saved NAT state holds connections this NAT cannot restore")
        position = 0

        @_guarded(-1, "loading the NAT state")
        def read(buf: int, size: int, _opaque: int | None) -> int:
            nonlocal position
            chunk = payload[position:position + size]
            ctypes.memmove(buf, chunk, len(chunk))
            position += size                  # past the end on a short read: slirp reads zeros then
            return len(chunk)

        status = lib.slirp_state_load(slirp, version, _ReadCb(read), None)
        if status < 0 or position != len(payload):
            raise SlirpError("the saved NAT state is damaged")

    def close(self) -> None:
        slirp, self._slirp = self._slirp, None
        if slirp is not None:
            _library().slirp_cleanup(slirp)
            self._timers.clear()

    def __enter__(self) -> Slirp:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _open_handle(self) -> int:
        if self._slirp is None:
            raise SlirpError("the NAT is closed")
        return self._slirp

    def _guest_address(self, text: str) -> ipaddress.IPv4Address | None:
        if not text:
            return None                       # slirp substitutes the first DHCP address
        address = _ipv4(text, "guest address")
        if address not in self.config.ip_network:
            raise SlirpError(f"guest address {text} is outside the NAT network {self.config.ip_network}")
        return address

    def _timer_timeout_ms(self, cap_ms: int) -> int:
        armed = [expiry for expiry, _ in self._timers.values() if expiry is not None]
        return max(0, min(cap_ms, min(armed) - self._cb_clock(None) // 1_000_000)) if armed else cap_ms

    def _run_due_timers(self) -> None:
        now = self._cb_clock(None) // 1_000_000 if self._timers else 0
        for handle, timer in [(h, t) for h, t in self._timers.items() if t[0] is not None and t[0] <= now]:
            if self._timers.get(handle) is timer and self._slirp is not None:   # not freed meanwhile
                timer[0] = None
                timer[1]()

    # Callbacks from C. An exception must never cross into libslirp: each is guarded or cannot raise.

    def _cb_send_packet(self, buf: int, size: int, _opaque: int | None) -> int:
        try:                                  # inline, not _guarded: this runs once per frame
            self._send_to_guest(ctypes.string_at(buf, size))
        except Exception:
            log.exception("NAT: delivering a frame to the guest failed (dropped)")
        return size                           # a dropped frame is retransmitted, not an I/O error

    def _cb_guest_error(self, message: bytes | None, _opaque: int | None) -> None:
        text = (message or b"").decode("utf-8", "replace")
        if self._on_guest_error is not None:
            self._on_guest_error(text)
        else:
            log.warning("NAT: guest error: %s", text)

    def _cb_clock(self, _opaque: int | None) -> int:
        try:
            self._last_clock_ns = int(self._clock_ns())
        except Exception:
            log.exception("NAT: the clock failed; keeping its last value")
        return self._last_clock_ns

    def _cb_timer_new(self, callback: int | None, cb_opaque: int | None, _opaque: int | None) -> int:
        on_expiry = _TimerCb(callback)
        handle, self._next_timer = self._next_timer, self._next_timer + 1
        self._timers[handle] = [None, lambda: on_expiry(cb_opaque)]
        return handle

    def _cb_timer_free(self, handle: int | None, _opaque: int | None) -> None:
        self._timers.pop(handle, None)

    def _cb_timer_mod(self, handle: int | None, expire_ms: int, _opaque: int | None) -> None:
        if handle in self._timers:
            self._timers[handle][0] = expire_ms

    def _cb_add_poll(self, fd: int, events: int, _opaque: int | None) -> int:
        self._polled_fds.append(fd)
        self._polled.append((fd, _POLL_FROM_SLIRP[events & 31]))
        return len(self._polled_fds) - 1

    def _cb_get_revents(self, index: int, _opaque: int | None) -> int:
        ready = self._ready
        return ready[index] if ready is not None and 0 <= index < len(ready) else 0


def _host_address(text: str) -> _InAddr:
    return _in_addr(_ipv4(text, "host address") if text else None)      # "": all addresses


def _check_port(port: int, side: str) -> None:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise SlirpError(f"{side} port {port!r} is not a port number (1-65535)")


def _c_config(config: NatConfig) -> _SlirpConfig:
    """slirp copies every string and address out of this during slirp_new(). Version 3 brings
    disable_dns; version 4's disable_dhcp and timer_new_opaque are not needed."""
    def text(value: str | None) -> bytes | None:
        return None if value is None else value.encode()

    def address(value: str) -> _InAddr:
        return _in_addr(ipaddress.IPv4Address(value))

    net = config.ip_network
    return _SlirpConfig(
        version=3, restricted=0, in_enabled=True, vnetwork=_in_addr(net.network_address),
        vnetmask=_in_addr(net.netmask), vhost=address(config.host), in6_enabled=False,
        vhostname=text(config.hostname), tftp_server_name=text(config.tftp_server_name),
        tftp_path=text(config.tftp_path), bootfile=text(config.bootfile),
        vdhcp_start=address(config.dhcp_start), vnameserver=address(config.nameserver),
        vdomainname=text(config.domain), if_mtu=config.mtu, if_mru=config.mtu, disable_dns=not config.dns,
    )
