"""Server-assigned ids."""

from __future__ import annotations


def test_server_ids_are_canonical_uuid4() -> None:
    import random
    import uuid

    from simulator.site import _uuid4

    rng = random.Random(3)
    for _ in range(2000):
        bits = rng.getrandbits(128)
        assert _uuid4(bits) == str(uuid.UUID(int=bits, version=4))
