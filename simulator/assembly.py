"""What a sandbox is made of by default: the layers around each site's FHIR API and the services
that run beside it. Each feature adds itself here, in one line, so the composition reads top-down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.sandbox import Layer, ServiceFactory


def default_layers() -> list[Layer]:
    """Outermost first: a request passes through these in order on its way to the FHIR API."""
    return []


def default_services() -> list[ServiceFactory]:
    from simulator.mllp.feeds import mllp_feeds
    from simulator.mllp.server import mllp_listeners

    return [mllp_listeners, mllp_feeds]
