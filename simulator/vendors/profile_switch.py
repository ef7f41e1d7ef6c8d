"""A vendor upgrade at a simulated time: the `switch_profile` fault action.

The fault engine (simulator/faults) decides when a fault fires and leaves its decisions in
`scope["ehrsim.faults"]`; this layer applies `switch_profile` ones: from that request on, the site
has the new profile's settings (paging, page sizes, id formats, interactions) and quirks. Data stays;
the switch is journaled once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.site import Site, SiteSettings
from simulator.vendors.profile import load_profile, settings_of
from simulator.vendors.quirks import set_quirks

if TYPE_CHECKING:
    from simulator.sandbox import Sandbox

ACTIVE_KEY = "vendor.profile"


def switch_profile(sandbox: Sandbox, site: Site, name: str) -> None:
    profile = load_profile(name)
    keep = {"max_body_bytes": site.settings.max_body_bytes, "public_base": site.settings.public_base}
    site.settings = SiteSettings.from_mapping({**settings_of(profile), **keep})
    site.ids.reformat(site.settings.ids)
    set_quirks(site, profile.quirks)
    site.extras[ACTIVE_KEY] = name
    sandbox.journal.record(
        {
            "protocol": "fhir",
            "kind": "profile_switch",
            "site": site.id,
            "profile": name,
            "version": profile.version,
        }
    )


class ProfileSwitch:
    def __init__(self, app: ASGIApp, site: Site, sandbox: Sandbox) -> None:
        self.app, self.site, self.sandbox = app, site, sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for decision in scope.get("ehrsim.faults") or ():
            if decision.action == "switch_profile":
                name = _profile_name(decision.params)
                if name and self.site.extras.get(ACTIVE_KEY) != name:
                    switch_profile(self.sandbox, self.site, name)
        await self.app(scope, receive, send)


def _profile_name(params: Any) -> str | None:
    value = params.get("profile") if hasattr(params, "get") else None
    return str(value) if value else None


def scenario_switches_profiles(sandbox: Sandbox) -> bool:
    faults = sandbox.scenario.raw.get("faults") or []
    return any(
        isinstance(f, dict) and (f.get("action") or {}).get("type") == "switch_profile" for f in faults
    )
