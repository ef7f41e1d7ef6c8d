"""ehrsim as a pytest plugin: a real sandbox for an integration's tests, reset before each test.

    @pytest.mark.ehrsim(scenario="rate-limited")
    def test_sync_backs_off(ehrsim):
        ehrsim.apply_env()                 # EHRSIM_FHIR_BASE, ... for the code under test
        my_integration.sync()
        ehrsim.expect("retry_after", filter={"path": "/Observation*"})

Registered through the `pytest11` entry point, so installing ehrsim is enough. It does nothing until
a test asks for the `ehrsim` fixture: no server, no heavy import (the simulator is imported then).
One server per (scenario, seed, store, tls) per session (per xdist worker), started on first use and
stopped at session end; `POST /_admin/reset` before each later test. docs/pytest-plugin.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from simulator.admin_client import AdminClient

MARKER_KEYS = ("scenario", "seed", "store", "tls")
DEFAULT_SCENARIO = "default"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ehrsim", "ehrsim sandbox (the ehrsim fixture)")
    group.addoption(
        "--ehrsim-scenario",
        metavar="NAME|PATH",
        default=None,
        help="scenario for tests without an ehrsim marker (default: 'default')",
    )
    group.addoption(
        "--ehrsim-server",
        metavar="URL",
        default=None,
        help="use the sandbox already running at URL (http://host:port) instead of starting one; "
        "it is reset before each test",
    )
    group.addoption(
        "--ehrsim-admin-token",
        metavar="TOKEN",
        default=None,
        help="admin API token of the --ehrsim-server sandbox (default: $EHRSIM_ADMIN_TOKEN), needed when "
        "it listens beyond loopback",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ehrsim(scenario=None, seed=None, store='memory', tls=False): the sandbox the ehrsim fixture serves "
        "(on a test, class or module; for each argument the closest marker that sets it wins)",
    )


@dataclass(frozen=True)
class SandboxKey:
    """What makes two tests share a server. `scenario` None: the external server's own scenario."""

    scenario: str | None
    seed: int | str | None = None
    store: str = "memory"
    tls: bool = False  # HTTPS with a self-signed pair of the session


def sandbox_key(node: pytest.Item, config: pytest.Config) -> SandboxKey:
    """Each argument from the closest `ehrsim` marker that sets it (test, class, module), the
    scenario else from `--ehrsim-scenario`; bad marker arguments fail the test."""
    kwargs: dict[str, Any] = {}
    for marker in node.iter_markers("ehrsim"):  # closest first
        if len(marker.args) > 1:
            pytest.fail("@pytest.mark.ehrsim takes at most one positional argument (the scenario)", False)
        unknown = sorted(set(marker.kwargs) - set(MARKER_KEYS))
        if unknown:
            pytest.fail(
                f"@pytest.mark.ehrsim: unknown argument(s) {', '.join(unknown)}; use {', '.join(MARKER_KEYS)}",
                False,
            )
        given = dict(zip(("scenario",), marker.args, strict=False)) | marker.kwargs
        for key, value in given.items():
            if value is not None:
                kwargs.setdefault(key, value)
    scenario = kwargs.get("scenario")
    if isinstance(scenario, str) and Path(scenario).suffix in (".yaml", ".yml"):
        scenario = str(config.rootpath / scenario)  # a marker's path: from the rootdir, wherever pytest runs
    scenario = scenario or config.getoption("ehrsim_scenario")
    seed = kwargs.get("seed")
    if seed is not None and not isinstance(seed, int | str):
        pytest.fail(f"@pytest.mark.ehrsim: seed must be an int or a string, not {seed!r}", False)
    store = kwargs.get("store") or "memory"
    if not isinstance(store, str) or not (store in ("memory", "sqlite") or store.startswith("sqlite:")):
        pytest.fail(
            f"@pytest.mark.ehrsim: store must be 'memory', 'sqlite' or 'sqlite:PATH', not {store!r}", False
        )
    tls = kwargs.get("tls", False)
    if not isinstance(tls, bool):
        pytest.fail(f"@pytest.mark.ehrsim: tls must be True or False, not {tls!r}", False)
    return SandboxKey(str(scenario) if scenario else None, seed, store, tls)


def setup_failure(message: str) -> BaseException:
    """pytest's failure with just `message` (no traceback), to raise from an `except` block."""
    return pytest.fail.Exception(message, pytrace=False)


@dataclass
class Target:
    """One sandbox the fixture can hand out: where it is and its admin client."""

    origin: str
    admin: AdminClient
    fresh: bool = True  # just started or loaded: already at the scenario's start, no reset needed
    cert: Path | None = None  # the certificate a started HTTPS sandbox serves


class SandboxPool:
    """The session's sandboxes: servers started here, or the one at `--ehrsim-server`."""

    def __init__(
        self,
        server_url: str | None,
        tmp_path_factory: pytest.TempPathFactory,
        workers: int = 1,
        admin_token: str | None = None,
    ) -> None:
        import contextlib

        self.server_url = server_url.rstrip("/") if server_url else None
        self.admin_token = admin_token
        self.workers = workers  # xdist workers in this run (1 without xdist)
        self.tmp_path_factory = tmp_path_factory
        self.targets: dict[SandboxKey, Target] = {}
        self.loaded: SandboxKey | None = None  # what the external server was last loaded with
        self.stack = contextlib.ExitStack()

    def acquire(self, key: SandboxKey) -> Target:
        """A sandbox at the scenario's initial state for `key`: data, clock, faults and journal."""
        target = self._external(key) if self.server_url else self._started(key)
        if not target.fresh:
            target.admin.reset()
        target.fresh = False
        return target

    def _started(self, key: SandboxKey) -> Target:
        target = self.targets.get(key)
        if target is not None:
            return target
        import sqlite3

        from simulator.admin_client import AdminClient
        from simulator.scenario import ScenarioError, load_scenario
        from simulator.testing import serve_in_thread
        from simulator.tls import self_signed_pair

        try:
            scenario = load_scenario(key.scenario or DEFAULT_SCENARIO)
        except ScenarioError as exc:
            raise setup_failure(f"ehrsim: cannot load scenario {key.scenario!r}:\n{exc}") from None
        if key.seed is not None:
            scenario.seed = key.seed
        store = key.store
        if store == "sqlite":  # a database of this session's own, removed with pytest's temp dirs
            store = f"sqlite:{self.tmp_path_factory.mktemp('ehrsim-store') / 'ehrsim.db'}"
        tls = self_signed_pair(self.tmp_path_factory.mktemp("ehrsim-tls")) if key.tls else None
        try:
            server = self.stack.enter_context(serve_in_thread(scenario, store=store, tls=tls))
        except (OSError, ValueError, RuntimeError, sqlite3.Error) as exc:
            raise setup_failure(
                f"ehrsim: cannot start {scenario.name!r} with store {store!r}: {exc}"
            ) from None
        verify = server.ssl_context() if server.cert else True
        admin = self.stack.enter_context(AdminClient(server.origin, verify=verify))
        target = self.targets[key] = Target(server.origin, admin, cert=server.cert)
        return target

    def _external(self, key: SandboxKey) -> Target:
        if self.workers > 1:
            pytest.fail(
                "ehrsim: --ehrsim-server is one sandbox, and resets from parallel xdist workers would "
                "undo each other's tests; run without -n, or drop --ehrsim-server to get a server per worker",
                False,
            )
        assert self.server_url is not None
        target = self.targets.get(SandboxKey(None))
        if target is None:
            target = self.targets[SandboxKey(None)] = Target(self.server_url, self._connect(), fresh=False)
        wanted = SandboxKey(key.scenario, key.seed)  # the store and the scheme are the server's own
        if key.scenario is not None and wanted != self.loaded:
            self._load(target.admin, wanted)
            target.fresh = True
        return target

    def _connect(self) -> AdminClient:
        """An admin client for the external server, once it has answered a protected call."""
        import httpx

        from simulator.admin_client import AdminClient, AdminError

        admin = AdminClient(self.server_url or "", self.admin_token)
        try:
            admin.scenario()
        except httpx.HTTPError as exc:
            admin.close()
            raise setup_failure(f"ehrsim: no sandbox answers at {self.server_url} ({exc})") from None
        except AdminError as exc:
            admin.close()
            raise setup_failure(
                f"ehrsim: the admin API at {self.server_url} refused: {exc} "
                "(give --ehrsim-admin-token or $EHRSIM_ADMIN_TOKEN)"
            ) from None
        return self.stack.enter_context(admin)

    def _load(self, admin: AdminClient, key: SandboxKey) -> None:
        from simulator.admin_client import AdminError

        assert key.scenario is not None
        try:
            if key.seed is None:
                admin.load_scenario(key.scenario)
            else:
                admin.load_scenario(definition={"extends": key.scenario, "seed": key.seed})
        except AdminError as exc:
            raise setup_failure(
                f"ehrsim: the server at {self.server_url} cannot load {key.scenario!r}: {exc}"
            ) from None
        self.loaded = key

    def close(self) -> None:
        self.stack.close()


class FaultControls:
    """The sandbox's faults, changed at runtime (undone by the reset before the next test)."""

    def __init__(self, admin: AdminClient) -> None:
        self.admin = admin

    def list(self) -> list[dict[str, Any]]:
        return self.admin.faults()

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A fault as in a scenario's `faults:` (match, schedule, probability, action)."""
        return self.admin.add_fault(spec)

    def enable(self, fault_id: str) -> dict[str, Any]:
        return self.admin.enable_fault(fault_id)

    def disable(self, fault_id: str) -> dict[str, Any]:
        return self.admin.disable_fault(fault_id)


class EhrsimSandbox:
    """What the `ehrsim` fixture gives a test: the sandbox's addresses and its admin API."""

    def __init__(self, target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
        self.origin = target.origin
        self.admin = target.admin
        self.ca_file = target.cert  # trust it to reach an HTTPS sandbox (None: plain HTTP)
        self.faults = FaultControls(target.admin)
        self._monkeypatch = monkeypatch
        self._sites: list[dict[str, Any]] | None = None
        self._env: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<EhrsimSandbox {self.origin}>"

    @property
    def sites(self) -> list[dict[str, Any]]:
        """Each site's id, FHIR base, SMART endpoints and MLLP port (`GET /_admin/sites`)."""
        if self._sites is None:
            self._sites = self.admin.sites()
        return self._sites

    @property
    def fhir_base(self) -> str:
        """The first site's FHIR base URL."""
        return self.sites[0]["fhir_base"]

    @property
    def mllp(self) -> tuple[str, int] | None:
        """The first site's MLLP endpoint as (host, port); None when the site has none."""
        env = self.env
        if "EHRSIM_MLLP_PORT" not in env:
            return None
        return env["EHRSIM_MLLP_HOST"], int(env["EHRSIM_MLLP_PORT"])

    @property
    def env(self) -> dict[str, str]:
        """The EHRSIM_* variables for the first site and its backend client (a copy)."""
        if self._env is None:
            self._env = self.env_for()
        return dict(self._env)

    def env_for(
        self, site: str | None = None, client_id: str | None = None, private_key: str | None = None
    ) -> dict[str, str]:
        """The EHRSIM_* variables for another site or client (e.g. two-hospitals' second site);
        `private_key`: the PEM path of a private_key_jwt client, passed on as EHRSIM_PRIVATE_KEY."""
        from simulator.integration_env import integration_env

        return integration_env(self.admin, site, client_id, private_key)

    def apply_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """Set the EHRSIM_* variables (default: `env`) in os.environ for this test; other EHRSIM_*
        variables are removed, so nothing stale leaks in. Over HTTPS (`tls=True`) SSL_CERT_FILE is
        the sandbox's certificate, so that clients trusting it need no change. All are restored
        after the test."""
        from simulator.integration_env import ENV_NAMES

        chosen = self.env if env is None else env
        for name in ENV_NAMES:
            if name in chosen:
                self._monkeypatch.setenv(name, chosen[name])
            else:
                self._monkeypatch.delenv(name, raising=False)
        if self.ca_file is not None:
            self._monkeypatch.setenv("SSL_CERT_FILE", str(self.ca_file))
        return chosen

    def advance(self, duration: float | str) -> dict[str, Any]:
        """Move simulated time forward by seconds or a duration such as '5m'; returns the clock."""
        return self.admin.advance(duration)

    def journal(self, **filters: Any) -> list[dict[str, Any]]:
        """Journal entries matching the filters (site, method, path, status, client_id, fault, ...)."""
        return self.admin.journal(**filters)

    def expect(self, check: str, **spec: Any) -> dict[str, Any]:
        """Run a journal check (count, order, gaps, retry_after, duplicates, during); a failing
        check raises VerificationFailed (an AssertionError) whose message is the check's finding."""
        __tracebackhide__ = True  # the failure points at the test's line, not at this helper
        return self.admin.expect(check, **spec)


@pytest.fixture(scope="session")
def ehrsim_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxPool]:
    """The session's sandboxes (per xdist worker); servers stop when the session ends."""
    config = request.config
    workers = getattr(config, "workerinput", {}).get("workercount", 1)  # set by xdist in workers
    token = config.getoption("ehrsim_admin_token") or os.environ.get("EHRSIM_ADMIN_TOKEN")
    pool = SandboxPool(config.getoption("ehrsim_server"), tmp_path_factory, int(workers), token)
    yield pool
    pool.close()


@pytest.fixture
def ehrsim(request: pytest.FixtureRequest, ehrsim_pool: SandboxPool) -> Iterator[EhrsimSandbox]:
    """A sandbox at its scenario's initial state, chosen by the closest `ehrsim` marker."""
    key = sandbox_key(request.node, request.config)
    target = ehrsim_pool.acquire(key)
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield EhrsimSandbox(target, monkeypatch)
