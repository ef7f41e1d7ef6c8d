"""The vendor quirk layers around a site's FHIR API, outermost first.

Registered once in `simulator/assembly.py:default_layers`, inside the fault layer (whose
`switch_profile` decisions it applies) and outside auth (so auth errors leave in the vendor's shape).
A site without a profile gets its app back unwrapped, unless the scenario schedules a profile switch.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from simulator.faults.http import ERROR_RENDERER
from simulator.site import Site
from simulator.vendors.content_types import ContentTypes
from simulator.vendors.error_shapes import ErrorShapes, render_error
from simulator.vendors.interactions import InteractionRules
from simulator.vendors.profile_switch import ACTIVE_KEY, ProfileSwitch, scenario_switches_profiles
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
        if spec and spec.raw.get("vendor_profile"):
            site.extras[ACTIVE_KEY] = spec.raw["vendor_profile"]
    has_profile = bool(site.extras[QUIRKS_KEY]) or site.settings.interactions is not None
    if not has_profile and not scenario_switches_profiles(sandbox):
        return app
    # Faults and rate limits answer outside these layers; they render errors through this hook.
    site.extras[ERROR_RENDERER] = functools.partial(render_error, site)
    # Innermost first: error shapes sit outside the others so every error leaves in vendor form;
    # the profile switch is outermost so a switch applies to the request that triggers it.
    for layer in (WriteRules, SearchRules, InteractionRules, UnknownTypePage, ErrorShapes, ContentTypes):
        app = layer(app, site)
    return ProfileSwitch(app, site, sandbox)
