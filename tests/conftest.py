from __future__ import annotations

import httpx
import pytest

from simulator.testing import RunningServer, serve_in_thread


@pytest.fixture(scope="session", params=["memory", "sqlite"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    """The default scenario, shared by the tests of one xdist worker. Tests that write make their own data.

    Every test that uses it runs against both stores: the in-memory store and the SQLite store must
    pass the same suite.
    """
    store = "memory"
    if request.param == "sqlite":
        store = f"sqlite:{tmp_path_factory.mktemp('store') / 'ehrsim.db'}"
    with serve_in_thread("default", store=store) as running:
        yield running


@pytest.fixture
def fresh_server() -> RunningServer:
    """A server of its own, for tests that need exact counts or a pristine store."""
    with serve_in_thread("default") as running:
        yield running


@pytest.fixture
def fhir(server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=server.fhir_base, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def smart() -> RunningServer:
    """A SMART-enabled site (tests/smart_support.py's scenario), one per test module."""
    from tests.smart_support import serve_auth

    with serve_auth() as running:
        yield running


@pytest.fixture
def http() -> httpx.Client:
    """A plain HTTP client with the auth tests' generous timeout (the machine is shared)."""
    from tests.smart_support import TIMEOUT

    with httpx.Client(timeout=TIMEOUT) as client:
        yield client
