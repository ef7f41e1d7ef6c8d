"""TLS for MLLP: a server context from certificate files, and a self-signed pair for local use.

    python -m simulator.mllp.tls out/   # writes out/mllp-cert.pem and out/mllp-key.pem

The pair is for loopback testing only (CN and SAN "localhost" and 127.0.0.1, 30 days).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
from pathlib import Path
from typing import Any


def server_context(tls: dict[str, Any]) -> ssl.SSLContext:
    """An SSLContext from a site's `mllp: tls: {cert, key}` (PEM file paths)."""
    if not tls.get("cert") or not tls.get("key"):
        raise ValueError("mllp.tls needs 'cert' and 'key' (PEM file paths)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls["cert"]), str(tls["key"]))
    return context


def self_signed_pair(directory: str | Path, name: str = "mllp") -> tuple[Path, Path]:
    """Write `{name}-cert.pem` and `{name}-key.pem` (EC P-256) into `directory`; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

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
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}-cert.pem", out / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


if __name__ == "__main__":
    cert_file, key_file = self_signed_pair(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(f"{cert_file}\n{key_file}")
