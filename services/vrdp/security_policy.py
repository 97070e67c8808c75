"""Which RDP security a VM's server offers, from its VRDE Security/* properties: Standard RDP Security
(a fresh server key), TLS (the user's or a self-signed certificate), or both; one policy per listener."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.vrdp import security, tls
from services.vrdp.connection import ConnectionConfig

log = logging.getLogger("headbox.vrdp.security")

# The VRDE properties read here (VBoxManage modifyvm VM --vrdeproperty NAME=VALUE):
#   Security/Method            RDP (Standard RDP Security only), TLS (the default, as VirtualBox's
#                              current server) or NEGOTIATE (both; the client's request decides)
#   Security/ServerCertificate, Security/ServerPrivateKey, Security/CACertificate
#                              PEM paths; unset: a self-signed pair kept 0600 in the state folder
#   Security/TLSMinVersion     Headbox's own: 1.0, 1.1, 1.2 (unset) or 1.3, the oldest TLS accepted
#   Security/RDPMinEncryption  Headbox's own: 40, 56 or 128 (unset), the weakest RC4 accepted
METHODS = ("RDP", "TLS", "NEGOTIATE")
# Headbox's own property (VirtualBox has none): the weakest RC4 a Standard Security client may pick.
MIN_ENCRYPTION_PROPERTY = "Security/RDPMinEncryption"
MIN_ENCRYPTION = {"40": security.ENCRYPTION_METHOD_40BIT, "56": security.ENCRYPTION_METHOD_56BIT,
                  "128": security.ENCRYPTION_METHOD_128BIT}
TLS_MIN_VERSION_PROPERTY = "Security/TLSMinVersion"


@dataclass(frozen=True)
class SecurityPolicy:
    method: str                          # RDP, TLS or NEGOTIATE
    tls_context: ssl.SSLContext | None   # None: TLS not offered, or offered but unusable (tls_error)
    tls_error: str | None                # why the configured certificate cannot be used
    server_key: security.ServerKey | None  # None: Standard RDP Security not offered
    min_encryption: int = security.ENCRYPTION_METHOD_128BIT

    def connection_config(self, desktop_size: Callable[[], tuple[int, int] | None] | None = None,
                          **options) -> ConnectionConfig:
        """The per-client configuration; options are ConnectionConfig's other fields (max_bpp ...)."""
        return ConnectionConfig(self.tls_context, desktop_size=desktop_size, tls_error=self.tls_error,
                                server_key=self.server_key, min_encryption=self.min_encryption,
                                **options)


def security_policy_from(properties: dict[str, str], state_dir: Path | str | None, *,
                         server_key: security.ServerKey | None = None) -> SecurityPolicy:
    """Read Security/Method, ServerCertificate, ServerPrivateKey, CACertificate, TLSMinVersion and
    RDPMinEncryption. A certificate that cannot be used is logged once and makes TLS clients get
    SSL_CERT_NOT_ON_SERVER (VirtualBox's behaviour); Standard Security clients still connect."""
    raw = (properties.get("Security/Method") or "").strip()
    method = raw.upper()
    if method not in METHODS:
        if raw:
            log.warning("Unsupported 'Security/Method' = '%s'.", raw)
        method = "TLS"  # VirtualBox's current server requires TLS unless told otherwise
    min_encryption = security.ENCRYPTION_METHOD_128BIT
    raw_min = (properties.get(MIN_ENCRYPTION_PROPERTY) or "").strip().lower().removesuffix("bit")
    if raw_min:
        if raw_min not in MIN_ENCRYPTION:
            log.warning("Unsupported '%s' = '%s' (40, 56 or 128); using 128.", MIN_ENCRYPTION_PROPERTY,
                        properties[MIN_ENCRYPTION_PROPERTY])
        else:
            min_encryption = MIN_ENCRYPTION[raw_min]
    tls_context = tls_error = None
    if method in ("TLS", "NEGOTIATE"):
        try:
            tls_context = tls_context_from(properties, state_dir)
        except (tls.TlsConfigError, OSError) as exc:
            tls_error = str(exc) if isinstance(exc, tls.TlsConfigError) else f"TLS setup failed: {exc}"
            log.error("VRDP: TLS is not available, TLS clients are refused: %s", tls_error)
    if method in ("RDP", "NEGOTIATE") and server_key is None:
        server_key = security.ServerKey.generate()
    if method == "TLS":
        server_key = None
    log.info("Security method %s%s", method, f" (TLS unusable: {tls_error})" if tls_error else "")
    return SecurityPolicy(method, tls_context, tls_error, server_key, min_encryption)


def tls_context_from(properties: dict[str, str], state_dir: Path | str | None) -> ssl.SSLContext:
    def path(name: str) -> str | None:
        value = (properties.get(name) or "").strip()
        return value or None

    min_version = tls.parse_min_version(properties.get(TLS_MIN_VERSION_PROPERTY))
    credentials = tls.resolve_credentials(path("Security/ServerCertificate"), path("Security/ServerPrivateKey"),
                                          path("Security/CACertificate"), state_dir=state_dir)
    return tls.create_server_context(credentials, min_version=min_version)


# The RDP_NEG_FAILURE codes a Refused event carries, for the log.
NEGOTIATION_FAILURES = {
    1: "TLS is required (SSL_REQUIRED_BY_SERVER)",
    2: "TLS is not allowed (SSL_NOT_ALLOWED_BY_SERVER)",
    3: "the TLS certificate is unusable (SSL_CERT_NOT_ON_SERVER)",
}
