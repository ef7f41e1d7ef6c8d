"""The authorization server's signing keys: generated on first use and kept in a data directory.

One RSA key (RS256 for id_tokens, RS384 for access tokens) and one P-384 key (ES384), stored as a
private JWKS in `$EHRSIM_DATA_DIR/auth-keys.json` (default `~/.ehrsim/`), so tokens and a client's
cached JWKS stay valid across restarts.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

SIGNING_ALGORITHMS = ["RS256", "RS384", "ES384"]


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("EHRSIM_DATA_DIR")
    return Path(env) if env else Path.home() / ".ehrsim"


class ServerKeys:
    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.rsa = next(k for k in keys if isinstance(k, RSAKey))
        self.ec = next(k for k in keys if isinstance(k, ECKey))

    @classmethod
    def generate(cls) -> ServerKeys:
        rsa = RSAKey.generate_key(2048, parameters={"use": "sig"})
        ec = ECKey.generate_key("P-384", parameters={"use": "sig"})
        for key in (rsa, ec):
            key.ensure_kid()
        return cls(KeySet([rsa, ec]))

    def public_jwks(self) -> dict[str, Any]:
        keys = []
        for key, algs in ((self.rsa, ("RS256", "RS384")), (self.ec, ("ES384",))):
            for alg in algs:  # one entry per algorithm so a client can pick by `alg`
                keys.append({**key.as_dict(private=False), "alg": alg})
        return {"keys": keys}

    def sign(self, claims: dict[str, Any], alg: str = "RS384") -> str:
        key = self.ec if alg.startswith("ES") else self.rsa
        return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])

    def verify(self, token: str) -> dict[str, Any]:
        return dict(jwt.decode(token, self.keys, algorithms=SIGNING_ALGORITHMS).claims)


@functools.cache
def server_keys(directory: Path) -> ServerKeys:
    """The keys kept in `directory`, made (and written atomically) the first time."""
    path = directory / "auth-keys.json"
    if path.exists():
        try:
            return ServerKeys(KeySet.import_key_set(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, KeyError, StopIteration) as exc:
            raise ValueError(f"{path}: not a usable key file ({exc}); delete it to make new keys") from None
    keys = ServerKeys.generate()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        json.dump(keys.keys.as_dict(private=True), handle)
    os.chmod(handle.name, 0o600)
    os.replace(handle.name, path)
    return keys
