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
    from simulator.faults.http import fault_layer
    from simulator.journaling import journal_layer
    from simulator.ratelimit import rate_limit_layer
    from simulator.vendors.layers import vendor_quirks

    return [journal_layer, fault_layer, rate_limit_layer, vendor_quirks]


def default_services() -> list[ServiceFactory]:
    return []


def protocol_prefixes() -> dict[str, str]:
    """Paths below a site's base that are not FHIR, by protocol (e.g. the SMART endpoints: auth).
    Faults match on the protocol; the journal records it."""
    return {}


def client_resolvers() -> list[ClientResolver]:
    """How a request's client id is found (e.g. from its bearer token); the source address if none."""
    return []


def admin_routes(sandbox: Sandbox) -> list[BaseRoute]:
    """Extra admin API routes (under /_admin/) contributed by features, e.g. clients and token."""
    return []
