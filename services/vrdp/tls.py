"""TLS for RDP's PROTOCOL_SSL: the server certificate (the user's, or a self-signed one kept 0600), the
SSLContext (TLS 1.2+ unless older is allowed), and a sans-I/O session over memory BIOs."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.private_file import write_private
from services.vrdp.security import ProtocolError

SELF_SIGNED_CERT = "vrdp-server.crt"
SELF_SIGNED_KEY = "vrdp-server.key"
SELF_SIGNED_DAYS = 3650

# Forward-secret AEAD first; the CBC-SHA2 suites keep Windows 7/8 mstsc working at TLS 1.2.
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:ECDHE+AES+SHA256:ECDHE+AES+SHA384:!aNULL:!eNULL"
# TLS 1.0/1.1 clients (old rdesktop, XP-era mstsc) need SHA-1 suites, which OpenSSL 3 hides above
# security level 0.
LEGACY_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:ECDHE+AES:DHE+AES:RSA+AES:!aNULL:!eNULL:@SECLEVEL=0"


class TlsConfigError(Exception):
    """A certificate or key the user pointed at cannot be used; the message is one line for them."""


class TlsError(ProtocolError):
    """The peer's TLS failed (bad handshake, bad record): close that one connection."""


@dataclass(frozen=True)
class TlsCredentials:
    cert_file: Path
    key_file: Path
    ca_file: Path | None
    certificate_der: bytes

    @property
    def subject_public_key(self) -> bytes:
        """The certificate's subjectPublicKey BIT STRING contents, which CredSSP binds to (MS-CSSP)."""
        key = x509.load_der_x509_certificate(self.certificate_der).public_key()
        if isinstance(key, rsa.RSAPublicKey):
            return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        spki = key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
        return _bit_string_of_spki(spki)


def _bit_string_of_spki(spki: bytes) -> bytes:
    # SEQUENCE { AlgorithmIdentifier, BIT STRING }: skip the outer header and the algorithm.
    def header(data: bytes, pos: int) -> tuple[int, int]:
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        return pos, length

    pos, _ = header(spki, 0)
    alg_start, alg_len = header(spki, pos)
    bits_start, bits_len = header(spki, alg_start + alg_len)
    return spki[bits_start + 1:bits_start + bits_len]  # the first byte counts unused bits


def check_key_file(path: Path) -> None:
    """Refuse a private key others can read: DESIGN keeps keys 0600, ssh-style refusal makes it stick."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise TlsConfigError(f"cannot read the TLS private key '{path}': {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TlsConfigError(f"TLS private key '{path}' is accessible by others "
                             f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 '{path}'")


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the TLS certificate '{path}': {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsConfigError(f"'{path}' is not a PEM certificate") from None


def _usable_self_signed(cert_file: Path, key_file: Path) -> x509.Certificate | None:
    if not (cert_file.exists() and key_file.exists()):
        return None
    check_key_file(key_file)
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except ValueError:
        return None
    # Renew shortly before expiry rather than have clients start warning on a given morning.
    renew_at = cert.not_valid_after_utc - datetime.timedelta(days=7)
    if renew_at <= datetime.datetime.now(datetime.UTC):
        return None
    return cert


def generate_self_signed(hostname: str) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM): RSA-2048/SHA-256, which OpenSSL 3 clients at level 2 accept."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        alt_names.append(x509.DNSName("localhost"))
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(folder: Path | str, hostname: str | None = None) -> TlsCredentials:
    """The server's own certificate: made on first start, reused after, both files 0600."""
    folder = Path(folder)
    hostname = hostname or socket.gethostname() or "localhost"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_file, key_file = folder / SELF_SIGNED_CERT, folder / SELF_SIGNED_KEY
    cert = _usable_self_signed(cert_file, key_file)
    if cert is None:
        cert_pem, key_pem = generate_self_signed(hostname)
        write_private(key_file, key_pem)
        write_private(cert_file, cert_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
    return TlsCredentials(cert_file, key_file, None, cert.public_bytes(serialization.Encoding.DER))


def resolve_credentials(cert_file: Path | str | None = None, key_file: Path | str | None = None,
                        ca_file: Path | str | None = None, *, state_dir: Path | str | None = None,
                        hostname: str | None = None) -> TlsCredentials:
    """VRDE Security/ServerCertificate, ServerPrivateKey, CACertificate; the self-signed pair if unset."""
    if cert_file is None and key_file is None:
        if ca_file is not None:
            raise TlsConfigError("Security/CACertificate needs Security/ServerCertificate as well")
        if state_dir is None:
            raise TlsConfigError("no TLS certificate configured and no folder to keep a generated one")
        return ensure_self_signed(state_dir, hostname)
    if cert_file is None or key_file is None:
        raise TlsConfigError("Security/ServerCertificate and Security/ServerPrivateKey go together")
    cert_path, key_path = Path(cert_file), Path(key_file)
    cert = _load_certificate(cert_path)
    check_key_file(key_path)
    ca_path = None
    if ca_file is not None:
        ca_path = Path(ca_file)
        _load_certificate(ca_path)
    credentials = TlsCredentials(cert_path, key_path, ca_path,
                                 cert.public_bytes(serialization.Encoding.DER))
    create_server_context(credentials)  # a mismatched key is a configuration error, found at start
    return credentials


# Security/TLSMinVersion (Headbox's own VRDE property): the oldest TLS a client may use.
TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def parse_min_version(value: str | None) -> ssl.TLSVersion:
    """"1.0".."1.3" (also "TLSv1.2"); unset or empty means TLS 1.2, as VirtualBox 7.1 and xrdp."""
    if value is None or not value.strip():
        return ssl.TLSVersion.TLSv1_2
    key = value.strip().lower().removeprefix("tlsv").removeprefix("tls")
    if key == "1":
        key = "1.0"
    if key not in TLS_VERSIONS:
        raise TlsConfigError(f"Security/TLSMinVersion '{value}' is not one of {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[key]


def create_server_context(credentials: TlsCredentials, *, allow_legacy: bool = False,
                          min_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """allow_legacy is min_version=TLSv1; TLS 1.0/1.1 also need OpenSSL's SHA-1 suites enabled."""
    if min_version is not None:
        allow_legacy = min_version < ssl.TLSVersion.TLSv1_2
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if allow_legacy:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the user asked for TLS 1.0/1.1
            context.minimum_version = min_version or ssl.TLSVersion.TLSv1
        context.set_ciphers(LEGACY_CIPHERS)
    else:
        context.minimum_version = min_version or ssl.TLSVersion.TLSv1_2
        context.set_ciphers(MODERN_CIPHERS)
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET)
    # RDP clients do not resume sessions; tickets would only add bytes after the handshake.
    context.num_tickets = 0
    context.verify_mode = ssl.CERT_NONE  # clients authenticate inside RDP (Info PDU or CredSSP)
    try:
        context.load_cert_chain(credentials.cert_file, credentials.key_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"TLS certificate '{credentials.cert_file}' and key "
                             f"'{credentials.key_file}' cannot be used together: {exc.reason}") from None
    except OSError as exc:
        raise TlsConfigError(f"cannot read TLS certificate or key: {exc.strerror}") from None
    if credentials.ca_file is not None:
        # OpenSSL builds the chain it sends from this store, so clients trusting the CA verify us.
        context.load_verify_locations(cafile=str(credentials.ca_file))
    return context


class TlsSession:
    """One TLS connection without a socket: the RDP state machine feeds it the bytes that follow the
    X.224 Connection Confirm and sends whatever bytes_to_send() returns."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool = True,
                 server_hostname: str | None = None):
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self.handshake_complete = False
        self.closed = False

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLError as exc:
            raise TlsError(f"TLS handshake failed: {exc.reason or exc}") from None
        self.handshake_complete = True

    def start(self) -> None:
        """Client side only: produce the ClientHello."""
        self._handshake()

    def receive(self, data: bytes) -> None:
        """Bytes from the network; advances the handshake while it runs."""
        if data:
            self._incoming.write(data)
        if not self.handshake_complete:
            self._handshake()

    def bytes_to_send(self) -> bytes:
        return self._outgoing.read()

    def read(self) -> bytes:
        """All application data decrypted so far (b"" if none yet)."""
        if not self.handshake_complete:
            return b""
        chunks = []
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            except ssl.SSLError as exc:
                raise TlsError(f"TLS record error: {exc.reason or exc}") from None
            if not chunk:
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        if not self.handshake_complete:
            raise RuntimeError("TLS application data before the handshake finished")
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS write failed: {exc.reason or exc}") from None

    def close(self) -> None:
        """Queue a close_notify; the caller sends bytes_to_send() and then closes the socket."""
        if self.handshake_complete:
            try:
                self._tls.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
        self.closed = True

    @property
    def version(self) -> str | None:
        return self._tls.version()

    @property
    def cipher(self) -> tuple[str, str, int] | None:
        return self._tls.cipher()
