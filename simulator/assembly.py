"""What a sandbox is made of by default: the layers around each site's FHIR API and the services
that run beside it. Each feature adds itself here, in one line, so the composition reads top-down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from simulator.journaling import ClientResolver
    from simulator.sandbox import Layer, Sandbox, ServiceFactory


def default_layers() -> list[Layer]:
    """Outermost first: a request passes through these in order on its way to the FHIR API."""
    from simulator.auth import auth_layer
    from simulator.faults.http import fault_layer
    from simulator.journaling import journal_layer
    from simulator.ratelimit import rate_limit_layer
    from simulator.vendors.layers import vendor_quirks

    return [journal_layer, fault_layer, rate_limit_layer, vendor_quirks, auth_layer]


def default_services() -> list[ServiceFactory]:
    from simulator.mllp.feeds import mllp_feeds
    from simulator.mllp.server import mllp_listeners

    return [mllp_listeners, mllp_feeds]


def protocol_prefixes() -> dict[str, str]:
    """Paths below a site's base that are not FHIR, by protocol (e.g. the SMART endpoints: auth).
    Faults match on the protocol; the journal records it."""
    from simulator.auth.discovery import PROTOCOL_PREFIXES as auth_prefixes

    return {**auth_prefixes}


def client_resolvers() -> list[ClientResolver]:
    """How a request's client id is found (e.g. from its bearer token); the source address if none."""
    from simulator.auth.layer import oauth_client

    return [oauth_client]


def admin_routes(sandbox: Sandbox) -> list[BaseRoute]:
    """Extra admin API routes (under /_admin/) contributed by features, e.g. clients and token."""
    from simulator.auth.admin import admin_routes as auth_routes

    return [*auth_routes(sandbox)]
