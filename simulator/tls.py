"""TLS for ehrsim's listeners (HTTPS on the FHIR/admin port, MLLP over TLS): a server context from
PEM files, and a self-signed pair for local use.

    python -m simulator.tls certs/   # writes certs/ehrsim-cert.pem and certs/ehrsim-key.pem

The self-signed pair is for loopback testing only: CN "localhost", SAN localhost and 127.0.0.1,
valid 30 days. A client trusts it by taking the certificate as its CA (`curl --cacert`,
`httpx.Client(verify=...)`, `SSL_CERT_FILE`).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

VALIDITY = datetime.timedelta(days=30)
# An existing pair is reused only while it has at least this long left, so a server started on it
# does not go stale during a working day.
REUSE_MARGIN = datetime.timedelta(days=1)


class TLSError(ValueError):
    """A certificate or key that cannot be served; the message is one line naming the file."""


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server SSLContext from a PEM certificate (chain) and its PEM private key (unencrypted)."""
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise TLSError(f"{what} file {path} does not exist or is not a file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError:
        # OpenSSL's reasons ("PEM lib", "KEY_VALUES_MISMATCH") do not say which file is wrong.
        raise TLSError(_diagnose(Path(cert), Path(key))) from None
    except OSError as exc:
        raise TLSError(f"cannot read {exc.filename or cert}: {exc.strerror or exc}") from None
    return context


def _diagnose(cert: Path, key: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        return f"certificate file {cert} holds no PEM certificate"
    try:
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except TypeError:
        return f"key file {key} is encrypted (ehrsim needs an unencrypted PEM key)"
    except ValueError:
        return f"key file {key} holds no PEM private key"
    if _public_der(certificate.public_key()) != _public_der(private_key.public_key()):
        return f"key file {key} does not belong to the certificate in {cert}"
    return f"cannot use certificate {cert} with key {key}"


def _public_der(public_key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def self_signed_pair(directory: str | Path, name: str = "ehrsim", reuse: bool = False) -> tuple[Path, Path]:
    """Write `{name}-cert.pem` and `{name}-key.pem` (EC P-256) into `directory`; return their paths.

    With `reuse`, a pair already there that still belongs together and has a day or more left is
    kept, so clients that trust its certificate keep working across restarts.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    cert_path, key_path = out / f"{name}-cert.pem", out / f"{name}-key.pem"
    if reuse and _reusable(cert_path, key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)  # owner-only before the key is in it, not after
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _reusable(cert_path: Path, key_path: Path) -> bool:
    from cryptography import x509

    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        server_context(cert_path, key_path)
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    return certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC) >= REUSE_MARGIN


if __name__ == "__main__":
    cert_file, key_file = self_signed_pair(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(f"{cert_file}\n{key_file}")
