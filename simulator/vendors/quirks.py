"""Where a site's vendor quirks live at run time, so a profile switch takes effect on the next request."""

from __future__ import annotations

from typing import Any

from simulator.site import Site

QUIRKS_KEY = "vendor.quirks"


def quirks_of(site: Site) -> dict[str, Any]:
    return site.extras.get(QUIRKS_KEY) or {}


def set_quirks(site: Site, quirks: dict[str, Any] | None) -> None:
    site.extras[QUIRKS_KEY] = quirks or {}
