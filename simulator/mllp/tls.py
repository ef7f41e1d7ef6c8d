"""MLLP over TLS: a site's `mllp: tls: {cert, key}` as a server context (simulator/tls.py does the
work, shared with HTTPS on the FHIR port).

    python -m simulator.tls certs/   # a self-signed pair for local use (docs/mllp.md)
"""

from __future__ import annotations

import ssl
from typing import Any

from simulator import tls as shared


def server_context(tls: dict[str, Any]) -> ssl.SSLContext:
    """An SSLContext from a site's `mllp: tls: {cert, key}` (PEM file paths); raises ValueError."""
    if not tls.get("cert") or not tls.get("key"):
        raise ValueError("mllp.tls needs 'cert' and 'key' (PEM file paths)")
    return shared.server_context(tls["cert"], tls["key"])
