"""The vendor quirk layers around a site's FHIR API, outermost first.

Registered once in `simulator/assembly.py:default_layers`. A site without a profile (no `quirks`,
no `interactions`) gets its app back unwrapped, so generic sites pay nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from simulator.site import Site
from simulator.vendors.error_shapes import ErrorShapes
from simulator.vendors.interactions import InteractionRules
from simulator.vendors.quirks import QUIRKS_KEY, set_quirks
from simulator.vendors.search_rules import SearchRules
from simulator.vendors.unknown_types import UnknownTypePage
from simulator.vendors.write_rules import WriteRules

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox


def vendor_quirks(app: ASGIApp, site: Site, sandbox: Sandbox) -> ASGIApp:
    if QUIRKS_KEY not in site.extras:
        spec = next((s for s in sandbox.scenario.sites if s.id == site.id), None)
        set_quirks(site, (spec.raw.get("quirks") if spec else None) or {})
    if not site.extras[QUIRKS_KEY] and site.settings.interactions is None:
        return app
    # Innermost first: error shapes sit outside the others so every error leaves in vendor form.
    for layer in (WriteRules, SearchRules, InteractionRules, UnknownTypePage, ErrorShapes):
        app = layer(app, site)
    return app
