"""The sandbox's addresses for an integration under test, as environment variables.

PRODUCT.md's contract: an integration under test (the conformance client suite, the pytest plugin,
load tests, a CI job) finds the sandbox through these variables, so it needs no ehrsim-specific
configuration:

    EHRSIM_FHIR_BASE      the site's FHIR base URL
    EHRSIM_TOKEN_URL      the site's OAuth token endpoint (sites with SMART auth)
    EHRSIM_CLIENT_ID      a registered client (a backend client when there is one)
    EHRSIM_CLIENT_SECRET  its secret, when it authenticates with one
    EHRSIM_PRIVATE_KEY    a PEM path for private_key_jwt clients: the integration's own key, passed on
    EHRSIM_SCOPE          the scopes registered for that client
    EHRSIM_MLLP_HOST      where the site's MLLP endpoint listens
    EHRSIM_MLLP_PORT
    EHRSIM_LISTEN_PORT    where the integration's own MLLP listener must listen (the port the
                          site's first outbound feed delivers to)

Everything is read through the admin API, so it works for a server started anywhere.
"""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

from simulator.admin_client import AdminClient

ENV_NAMES = (
    "EHRSIM_FHIR_BASE",
    "EHRSIM_TOKEN_URL",
    "EHRSIM_CLIENT_ID",
    "EHRSIM_CLIENT_SECRET",
    "EHRSIM_PRIVATE_KEY",
    "EHRSIM_SCOPE",
    "EHRSIM_MLLP_HOST",
    "EHRSIM_MLLP_PORT",
    "EHRSIM_LISTEN_PORT",
)


class IntegrationEnvError(LookupError):
    """The sandbox has no site or client by the name asked for; the message lists what it has."""


def integration_env(
    admin: AdminClient,
    site: str | None = None,
    client_id: str | None = None,
    private_key: str | None = None,
) -> dict[str, str]:
    """The variables for one site (default: the first) and client (default: its first client that
    can get a token on its own, i.e. with the client_credentials grant; else its first client)."""
    sites = admin.sites()
    chosen = _pick(sites, site, "site", lambda s: s["id"])
    env = {"EHRSIM_FHIR_BASE": chosen["fhir_base"]}
    if chosen.get("mllp_port"):
        env["EHRSIM_MLLP_HOST"] = urlsplit(chosen["fhir_base"]).hostname or "127.0.0.1"
        env["EHRSIM_MLLP_PORT"] = str(chosen["mllp_port"])
    smart = chosen.get("smart")
    if smart:
        env["EHRSIM_TOKEN_URL"] = smart["token"]
        clients = admin.clients(chosen["id"]).get("clients", [])
        if clients or client_id:
            client = _pick(clients, client_id, "client", lambda c: c["client_id"], _backend_first)
            env["EHRSIM_CLIENT_ID"] = client["client_id"]
            if client.get("client_secret"):
                env["EHRSIM_CLIENT_SECRET"] = client["client_secret"]
            if client.get("scope"):
                env["EHRSIM_SCOPE"] = client["scope"]
    if private_key:
        env["EHRSIM_PRIVATE_KEY"] = private_key
    feeds = chosen.get("mllp_feeds") or ()
    if feeds:
        env["EHRSIM_LISTEN_PORT"] = feeds[0]["target"].rpartition(":")[2]
    return env


def shell_exports(env: dict[str, str]) -> str:
    """`export NAME=value` lines, quoted for a POSIX shell (for `eval "$(ehrsim env)"`)."""
    return "".join(f"export {name}={shlex.quote(env[name])}\n" for name in ENV_NAMES if name in env)


def _backend_first(clients: list[dict[str, Any]]) -> dict[str, Any]:
    for client in clients:
        if "client_credentials" in client.get("grant_types", ()):
            return client
    return clients[0]


def _pick(
    items: list[dict[str, Any]],
    wanted: str | None,
    what: str,
    name: Any,
    default: Any = None,
) -> dict[str, Any]:
    if not items:
        raise IntegrationEnvError(f"the sandbox has no {what}s")
    if wanted is None:
        return default(items) if default else items[0]
    for item in items:
        if name(item) == wanted:
            return item
    known = ", ".join(name(item) for item in items)
    raise IntegrationEnvError(f"no {what} '{wanted}' (the sandbox has: {known})")
