"""The sandbox: a loaded scenario's sites, clock and journal, and what builds them.

`Sandbox` is the one object the HTTP app, the admin API, the MLLP endpoint and the CLI share. It
owns no protocol: layers (journaling, faults, rate limits, auth) are ASGI wrappers registered in
`layers` and applied around each site's FHIR API whenever a scenario is (re)loaded.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from starlette.types import ASGIApp

from simulator import gcpolicy
from simulator.clock import Clock
from simulator.datalatency import visibility_for
from simulator.faults import FaultEngine
from simulator.fhir.api import FhirApi
from simulator.fhir.service import FhirService
from simulator.journal import Journal
from simulator.metrics import Metrics
from simulator.population import PopulationSpec, generate
from simulator.ratelimit import RateLimiter
from simulator.scenario import Scenario, SiteSpec
from simulator.site import Site, SiteSettings
from simulator.store import open_store
from simulator.store.base import Store, Write
from simulator.vendors.population import prepare_population

log = logging.getLogger("ehrsim")

# A layer wraps a site's ASGI app: (app, site, sandbox) -> app. Outermost is registered first.
Layer = Callable[[ASGIApp, Site, "Sandbox"], ASGIApp]


class BackgroundService(Protocol):
    """Something that runs beside the HTTP server for the life of a scenario (an MLLP listener...)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# Makes the services a loaded scenario needs, e.g. one MLLP listener per site.
ServiceFactory = Callable[["Sandbox"], list[BackgroundService]]


@dataclass
class SiteRuntime:
    site: Site
    service: FhirService
    app: ASGIApp


class Sandbox:
    def __init__(
        self,
        scenario: Scenario,
        store: str = "memory",
        layers: list[Layer] | None = None,
        service_factories: list[ServiceFactory] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """`layers`/`service_factories` default to `simulator.assembly`'s; `options` carries CLI
        overrides such as `mllp_port` and `host`."""
        from simulator import assembly

        self.store_spec = store
        self.layers: list[Layer] = assembly.default_layers() if layers is None else list(layers)
        self.service_factories: list[ServiceFactory] = (
            assembly.default_services() if service_factories is None else list(service_factories)
        )
        self.options: dict[str, Any] = dict(options or {})
        self.services: list[BackgroundService] = []
        self.journal = Journal()
        self.metrics = Metrics()
        self.scenario = scenario
        self.clock = Clock(scenario.clock_start, scenario.clock_speed)
        self.sites: dict[str, SiteRuntime] = {}
        self._configure()
        self._build()

    def _configure(self) -> None:
        """The scenario's faults, rate limits and journal settings, on the current clock."""
        scenario = self.scenario
        self.faults = FaultEngine.from_specs(scenario.faults, self.clock, scenario.seed)
        self.rate_limits = RateLimiter.from_specs(scenario.rate_limits, self.clock)
        self._configure_journal()

    def _configure_journal(self) -> None:
        settings = self.scenario.journal
        enabled = self.options.get("journal", settings.get("enabled", True))
        self.journal.configure(
            capacity=int(settings.get("capacity", 100_000)),
            spill_path=settings.get("spill"),
            enabled=bool(enabled),
            bodies=str(settings.get("bodies", "writes")),
            clock=self.clock,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def _build(self) -> None:
        for spec in self.scenario.sites:
            store = open_store(self.store_spec, site_id=spec.id)
            try:
                self._build_site(spec, store)
            except BaseException:
                store.close()  # not in self.sites yet, so `close()` would not reach it
                raise

    def _build_site(self, spec: SiteSpec, store: Store) -> None:
        site = Site(
            id=spec.id,
            base_path=spec.base_path,
            store=store,
            clock=self.clock,
            journal=self.journal,
            seed=self.scenario.seed,
            settings=SiteSettings.from_mapping(spec.settings),
            description=spec.description,
        )
        service = FhirService(site)
        if site.store.count() == 0:
            self._populate(service, spec)
        else:
            # A persistent store that already holds this site's data: keep it, and continue
            # the id sequence past what the earlier run used so new ids do not collide.
            log.info("site %s: %d resources loaded from %s", spec.id, site.store.count(), self.store_spec)
            self._skip_used_ids(site)
        self._apply_data_latency(service)
        self.sites[spec.id] = SiteRuntime(site, service, self._wrap(site, service))

    def _apply_data_latency(self, service: FhirService) -> None:
        """Writes after the starting data become visible per the scenario's `data_latency`."""
        baseline = max((v.seq for v in service.site.store), default=0) if self.scenario.data_latency else 0
        service.visible = visibility_for(self.scenario.data_latency, service.site.id, self.clock, baseline)

    def _wrap(self, site: Site, service: FhirService) -> ASGIApp:
        app: ASGIApp = FhirApi(site, service)
        for layer in reversed(self.layers):
            app = layer(app, site, self)
        return app

    def population(self, site: Site, spec: SiteSpec) -> list[dict[str, Any]]:
        """The site's synthetic population with ids from the site's id generator: what `_populate`
        loads and `ehrsim generate` exports, so both see the same resources."""
        population = PopulationSpec.from_mapping(
            spec.raw.get("population"),
            where=f"{self.scenario.source or 'scenario'}: sites[{spec.id}].population",
        )
        population = replace(population, patients=spec.patients, as_of=spec.as_of)
        resources = generate(self.scenario.seed, None, None, site.ids.new_id, population)
        return prepare_population(resources, spec.raw, site.ids.new_id)  # vendor test patients, codings

    def _populate(self, service: FhirService, spec: SiteSpec) -> None:
        # Everything built here lives as long as the site, so cyclic-GC passes over it are wasted
        # work: pausing the collector makes a 100,000-resource load about a third faster.
        paused = gc.isenabled()
        gc.disable()
        try:
            writes = [
                Write(r["resourceType"], r["id"], r, "POST") for r in self.population(service.site, spec)
            ]
            if writes:
                service.commit(writes)
        finally:
            if paused:
                gc.enable()

    @staticmethod
    def _skip_used_ids(site: Site) -> None:
        used = sum(1 for v in site.store if v.method == "POST")
        for _ in range(used):
            site.ids.new_id("")

    def reset(self) -> None:
        """Back to the scenario's start: data, clock, ids, journal, fault counters and buckets."""
        self.journal.clear()
        self.clock.reset()
        self.faults.reset()
        self.rate_limits.reset()
        for runtime in self.sites.values():
            site = runtime.site
            site.store.clear()
            runtime.service.restamp()
            site.reset_sequences()
            spec = next(s for s in self.scenario.sites if s.id == site.id)
            self._populate(runtime.service, spec)
            self._apply_data_latency(runtime.service)
            for hook in site.extras.get("on_reset", ()):  # e.g. SMART auth forgets its tokens
                hook()
        for service in self.services:  # e.g. MLLP duplicate windows and feeds start over too
            reset = getattr(service, "reset", None)
            if reset is not None:
                reset()
        gcpolicy.full_collection()  # under `ehrsim serve`: the dropped data is gone, the scan is short

    def load(self, scenario: Scenario) -> None:
        """Replace the scenario (and so every site); like a restart with another file. The new sites
        are built before the old ones close: when a feature refuses the scenario (ValueError, e.g. a
        client with a bad redirect URI), the old scenario keeps serving with its data."""
        previous = (self.scenario, self.clock, self.sites, self.faults, self.rate_limits)
        self.scenario, self.clock, self.sites = (
            scenario,
            Clock(scenario.clock_start, scenario.clock_speed),
            {},
        )
        try:
            self._configure()
            self._build()
        except Exception:
            self.close()
            self.scenario, self.clock, self.sites, self.faults, self.rate_limits = previous
            self._configure_journal()
            raise
        for runtime in previous[2].values():
            runtime.site.store.close()
        self.journal.clear()
        gcpolicy.full_collection()  # as after a reset

    def close(self) -> None:
        for runtime in self.sites.values():
            runtime.site.store.close()

    async def start_services(self) -> None:
        self.services = [service for factory in self.service_factories for service in factory(self)]
        for service in self.services:
            await service.start()

    async def stop_services(self) -> None:
        for service in reversed(self.services):
            await service.stop()
        self.services = []

    async def reload(self, scenario: Scenario) -> None:
        """Load another scenario while serving: services restart around the swap."""
        await self.stop_services()
        try:
            self.load(scenario)
        finally:
            await self.start_services()  # the new scenario's, or the old one's again

    # -- lookup ----------------------------------------------------------------------------------
    def site_for_path(self, path: str) -> SiteRuntime | None:
        best: SiteRuntime | None = None
        for runtime in self.sites.values():
            base = runtime.site.base_path
            if (path == base or path.startswith(base + "/")) and (
                best is None or len(base) > len(best.site.base_path)
            ):
                best = runtime
        return best

    def describe_sites(self, origin: str) -> list[dict[str, Any]]:
        return [
            {
                "id": r.site.id,
                "fhir_base": f"{origin}{r.site.base_path}",
                "description": r.site.description,
                "resources": r.site.store.count(),
                "mllp_host": r.site.extras.get("mllp_host"),
                "mllp_port": r.site.extras.get("mllp_port"),
                # Features describe what they add to a site (e.g. SMART endpoints): callables (base) -> dict.
                **{
                    k: v
                    for describe in r.site.extras.get("describe", ())
                    for k, v in describe(f"{origin}{r.site.base_path}").items()
                },
            }
            for r in self.sites.values()
        ]
