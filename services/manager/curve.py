"""CurveZMQ for the manager's TCP endpoint: the server key pair, the authorized client keys, the ZAP check.

Keys are Z85 text in ZeroMQ's certificate format (zmq.auth.load_certificate reads them); secret files
are created 0600 from the start, never chmod-ed afterwards."""

from __future__ import annotations

import logging
import os

import zmq
import zmq.auth

log = logging.getLogger("headbox.manager")

SERVER_PUBLIC = "server.key"
SERVER_SECRET = "server.key_secret"
AUTHORIZED = "authorized_keys"


def curve_dir(home: str) -> str:
    path = os.path.join(home, "curve")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_private(path: str, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def certificate_text(public: bytes, secret: bytes | None) -> str:
    lines = ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def server_keys(home: str) -> tuple[bytes, bytes]:
    """(public, secret) of the manager, generated on first use."""
    folder = curve_dir(home)
    secret_path = os.path.join(folder, SERVER_SECRET)
    if not os.path.exists(secret_path):
        public, secret = zmq.curve_keypair()
        _write_private(secret_path, certificate_text(public, secret), 0o600)
        _write_private(os.path.join(folder, SERVER_PUBLIC), certificate_text(public, None), 0o644)
        log.info("CurveZMQ server key pair created in %s", folder)
    public, secret = zmq.auth.load_certificate(secret_path)
    return public, secret


def authorized_keys(home: str) -> set[bytes]:
    """Z85 public keys, one a line (anything after the key is a note); a line starting with '#' is a
    comment ('#' is also a Z85 digit, so only there). Read on every handshake so edits apply."""
    try:
        with open(os.path.join(home, "curve", AUTHORIZED), encoding="ascii", errors="replace") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return set()
    return {line.split()[0].encode() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def authorize(home: str, public: bytes) -> None:
    """Append a client's public key to authorized_keys (0600)."""
    path = os.path.join(curve_dir(home), AUTHORIZED)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as file:
        file.write(public.decode() + "\n")


class AuthorizedKeys:
    """The ZAP credentials provider: admits a client whose key is listed, logs the refusal otherwise."""

    def __init__(self, home: str):
        self.home = home

    def callback(self, domain: str, key: bytes) -> bool:
        if key in authorized_keys(self.home):
            return True
        log.warning("refused a CurveZMQ client: its key %s is not in %s", key.decode(errors="replace"),
                    os.path.join(self.home, "curve", AUTHORIZED))
        return False


def start_authenticator(context: zmq.Context, home: str):
    """A ZAP handler thread for every CURVE socket of `context`."""
    from zmq.auth.thread import ThreadAuthenticator
    auth = ThreadAuthenticator(context, log=logging.getLogger("headbox.manager.zap"))
    auth.start()
    auth.configure_curve_callback(domain="headbox", credentials_provider=AuthorizedKeys(home))
    return auth


def make_server_socket(context: zmq.Context, home: str, address: str) -> zmq.Socket:
    """A ROUTER on `address` (tcp://HOST:PORT) that only speaks CURVE with the manager's key."""
    public, secret = server_keys(home)
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.zap_domain = b"headbox"
    sock.bind(address)
    return sock
