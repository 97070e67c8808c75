"""TLS for VRDP: self-signed certificate generation and reuse (0600), refusal of readable keys, user
certificates with a CA, and full handshakes between a TlsSession and Python's ssl client in memory."""

import datetime
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from services.vrdp import tls
from services.vrdp.security import ProtocolError
from services.vrdp.tls import TlsConfigError, TlsError, TlsSession


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vrdp-state") / "tls"
    return folder, tls.ensure_self_signed(folder, "vmhost.example")


def pump(server: TlsSession, client: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO):
    """Runs the handshake to the end, moving bytes both ways as a socket would."""
    for _ in range(20):
        try:
            client.do_handshake()
            client_done = True
        except ssl.SSLWantReadError:
            client_done = False
        server.receive(c_out.read())
        c_in.write(server.bytes_to_send())
        if client_done and server.handshake_complete:
            return
    raise AssertionError("handshake did not finish")


def client_for(context, hostname=None):
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    return context.wrap_bio(c_in, c_out, server_side=False, server_hostname=hostname), c_in, c_out


def insecure_client_context():
    # What xfreerdp /cert:ignore and aardwolf do: no verification at all.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_self_signed_generated_0600_and_reused(self_signed):
    folder, creds = self_signed
    assert mode(creds.key_file) == 0o600 and mode(creds.cert_file) == 0o600
    assert mode(folder) == 0o700
    cert = x509.load_der_x509_certificate(creds.certificate_der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"vmhost.example", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    again = tls.ensure_self_signed(folder, "vmhost.example")
    assert again.certificate_der == creds.certificate_der
    assert again.key_file.read_bytes() == creds.key_file.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == [tls.SELF_SIGNED_CERT, tls.SELF_SIGNED_KEY]


def test_expired_self_signed_is_renewed(tmp_path):
    creds = tls.ensure_self_signed(tmp_path, "h")
    key = serialization.load_pem_private_key(creds.key_file.read_bytes(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h")])
    now = datetime.datetime.now(datetime.UTC)
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(1).not_valid_before(now - datetime.timedelta(days=30))
           .not_valid_after(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    creds.cert_file.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    renewed = tls.ensure_self_signed(tmp_path, "h")
    assert renewed.certificate_der != old.public_bytes(serialization.Encoding.DER)
    assert mode(renewed.cert_file) == 0o600


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660])
def test_readable_key_refused_with_one_line(self_signed, tmp_path, bad_mode):
    _folder, creds = self_signed
    key = tmp_path / "server.key"
    key.write_bytes(creds.key_file.read_bytes())
    os.chmod(key, bad_mode)
    with pytest.raises(TlsConfigError) as err:
        tls.resolve_credentials(creds.cert_file, key)
    message = str(err.value)
    assert "\n" not in message and "chmod 600" in message and str(key) in message
    # and the generated pair is refused the same way once someone loosens it
    os.chmod(key, 0o600)
    tls.resolve_credentials(creds.cert_file, key)


def test_self_signed_key_loosened_is_refused(tmp_path):
    creds = tls.ensure_self_signed(tmp_path, "h")
    os.chmod(creds.key_file, 0o644)
    with pytest.raises(TlsConfigError):
        tls.ensure_self_signed(tmp_path, "h")


def make_ca_and_server(tmp_path):
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Root CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                       content_commitment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rdp.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("rdp.test")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem", "key": tmp_path / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    return paths, key


def test_user_certificate_with_ca_verifies_at_the_client(tmp_path):
    paths, key = make_ca_and_server(tmp_path)
    creds = tls.resolve_credentials(paths["cert"], paths["key"], paths["ca"])
    assert creds.subject_public_key == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    server = TlsSession(tls.create_server_context(creds))
    client_context = ssl.create_default_context(cafile=str(paths["ca"]))
    client, c_in, c_out = client_for(client_context, "rdp.test")
    pump(server, client, c_in, c_out)
    assert client.getpeercert()["subject"] == ((("commonName", "rdp.test"),),)


def test_user_certificate_errors_are_one_line(tmp_path, self_signed):
    paths, _key = make_ca_and_server(tmp_path)
    _folder, other = self_signed
    cases = [
        lambda: tls.resolve_credentials(paths["cert"], None),
        lambda: tls.resolve_credentials(tmp_path / "missing.pem", paths["key"]),
        lambda: tls.resolve_credentials(paths["key"], paths["key"]),          # key given as cert
        lambda: tls.resolve_credentials(paths["cert"], other.key_file),       # key of another cert
        lambda: tls.resolve_credentials(paths["cert"], paths["key"], tmp_path / "no-ca.pem"),
        lambda: tls.resolve_credentials(None, None),                          # nowhere to generate
        lambda: tls.resolve_credentials(None, None, paths["ca"], state_dir=tmp_path / "s"),
    ]
    for case in cases:
        with pytest.raises(TlsConfigError) as err:
            case()
        assert "\n" not in str(err.value)


def test_handshake_and_data_both_ways(self_signed):
    _folder, creds = self_signed
    server = TlsSession(tls.create_server_context(creds))
    client, c_in, c_out = client_for(insecure_client_context())
    assert server.read() == b"" and not server.handshake_complete
    pump(server, client, c_in, c_out)
    assert server.version in ("TLSv1.2", "TLSv1.3")
    # server -> client: an MCS Connect Response sized payload and a large one
    for payload in (b"\x03\x00\x00\x0b\x02\xf0\x80hello", os.urandom(200_000)):
        server.write(payload)
        c_in.write(server.bytes_to_send())
        got = b""
        while len(got) < len(payload):
            got += client.read(65536)
        assert got == payload
    # client -> server, delivered in small pieces as TCP may
    message = os.urandom(50_000)
    client.write(message)
    wire = c_out.read()
    received = b""
    for i in range(0, len(wire), 1000):
        server.receive(wire[i:i + 1000])
        received += server.read()
    assert received == message
    # close_notify reaches the client
    server.close()
    c_in.write(server.bytes_to_send())
    try:
        assert client.read(10) == b""  # SSLObject reports close_notify as end of data
    except ssl.SSLZeroReturnError:
        pass


def test_client_close_is_seen(self_signed):
    _folder, creds = self_signed
    server = TlsSession(tls.create_server_context(creds))
    client, c_in, c_out = client_for(insecure_client_context())
    pump(server, client, c_in, c_out)
    client.write(b"bye")
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    server.receive(c_out.read())
    assert server.read() == b"bye" and server.closed


def test_server_to_server_sessions(self_signed):
    # A TlsSession in client mode talks to one in server mode (what a test RDP client would use).
    _folder, creds = self_signed
    server = TlsSession(tls.create_server_context(creds))
    client = TlsSession(insecure_client_context(), server_side=False)
    client.start()
    for _ in range(10):
        server.receive(client.bytes_to_send())
        client.receive(server.bytes_to_send())
    assert server.handshake_complete and client.handshake_complete
    client.write(b"ping")
    server.receive(client.bytes_to_send())
    assert server.read() == b"ping"
    with pytest.raises(RuntimeError):
        TlsSession(tls.create_server_context(creds)).write(b"early")


def legacy_client_context():
    context = insecure_client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_refused_by_default(self_signed):
    _folder, creds = self_signed
    server = TlsSession(tls.create_server_context(creds))
    client, c_in, c_out = client_for(legacy_client_context())
    with pytest.raises(TlsError) as err:
        pump(server, client, c_in, c_out)
    assert isinstance(err.value, ProtocolError)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_allowed_when_the_user_allows_older(self_signed):
    _folder, creds = self_signed
    server = TlsSession(tls.create_server_context(creds, allow_legacy=True))
    client, c_in, c_out = client_for(legacy_client_context())
    pump(server, client, c_in, c_out)
    assert server.version == "TLSv1.1"


def test_garbage_instead_of_client_hello_is_a_protocol_error(self_signed):
    _folder, creds = self_signed
    server = TlsSession(tls.create_server_context(creds))
    with pytest.raises(ProtocolError):
        server.receive(b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00" + bytes(8))


@pytest.mark.parametrize("value,version", [(None, ssl.TLSVersion.TLSv1_2), ("", ssl.TLSVersion.TLSv1_2),
                                           ("1.0", ssl.TLSVersion.TLSv1), ("TLSv1.1", ssl.TLSVersion.TLSv1_1),
                                           (" 1.3 ", ssl.TLSVersion.TLSv1_3)])
def test_tls_min_version_property(value, version):
    assert tls.parse_min_version(value) == version


def test_tls_min_version_bad_value_is_one_line():
    with pytest.raises(tls.TlsConfigError, match=r"^Security/TLSMinVersion '1\.4' is not one of 1\.0, 1\.1"):
        tls.parse_min_version("1.4")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_min_version_1_3_refuses_a_tls_1_2_client_and_1_1_lets_old_ones_in(self_signed):
    _folder, creds = self_signed
    server = TlsSession(tls.create_server_context(creds, min_version=ssl.TLSVersion.TLSv1_3))
    context = insecure_client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    client, c_in, c_out = client_for(context)
    with pytest.raises(TlsError):
        pump(server, client, c_in, c_out)
    server = TlsSession(tls.create_server_context(creds, min_version=ssl.TLSVersion.TLSv1_1))
    client, c_in, c_out = client_for(legacy_client_context())
    pump(server, client, c_in, c_out)
    assert server.version == "TLSv1.1"
