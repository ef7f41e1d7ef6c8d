"""The FHIR interactions of one site, independent of HTTP.

The REST API, batch/transaction bundles, HL7 v2 ingest and the population loader all change data
through `FhirService`, so a rule (id assignment, versioning, conditional create, If-Match) is written
once. Methods raise `FHIRError` for every failure.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from simulator.clock import instant_at
from simulator.fhir.access import AccessPolicy, current_policy
from simulator.fhir.bundles import SearchSnapshot, bundle_shell, history_entry, self_link, subset
from simulator.fhir.errors import FHIRError, not_found
from simulator.fhir.paging import paging_style
from simulator.fhir.search import QueryParser, SearchEngine, SearchQuery, ignored_outcome
from simulator.fhir.validation import ID_PATTERN, validate_resource
from simulator.fhir.values import BadValue, ascii_int, date_range
from simulator.site import Site
from simulator.store.base import StoredVersion, Write, make_version

# Called with each committed version of the resource type it watches (after the commit), and with
# a deletion marker (resource None) for each resource retention expunges.
CommitListener = Callable[[StoredVersion], None]
# Whether a stored version can be read yet (data latency, simulator/datalatency.py); None: always.
Visibility = Callable[[StoredVersion], bool]


@dataclass(slots=True)
class Result:
    """The outcome of a write: HTTP-like status and the version written (or found)."""

    status: int
    version: StoredVersion | None = None
    outcome: dict[str, Any] | None = None


class FhirService:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.listeners: dict[str, list[CommitListener]] = {}  # resource type -> its listeners
        self._last_stamp = 0.0
        self.restamp()
        self.visible: Visibility | None = None

    def restamp(self) -> None:
        """Take the last commit's instant from the store (at start-up, and after a reset empties it:
        a reset's data must not be stamped after what ran before the reset)."""
        latest = self.site.store.history()[:1]
        self._last_stamp = latest[0].timestamp if latest else 0.0

    # -- helpers ---------------------------------------------------------------------------------
    def check_type(self, resource_type: str) -> None:
        if not self.site.supports(resource_type):
            raise FHIRError.of(
                404, "not-supported", f"Resource type '{resource_type}' is not supported by this server"
            )

    def guard(self, resource_type: str, interaction: str) -> AccessPolicy | None:
        """The request's access policy (None: auth off) after checking the type-level grant."""
        policy = current_policy()
        if policy is not None:
            policy.require(resource_type, interaction)
        return policy

    def check_access(
        self, policy: AccessPolicy | None, version_or_write: StoredVersion | Write, interaction: str
    ) -> None:
        item = version_or_write
        if policy is not None and not policy.allows(self, item.type, item.resource, interaction):
            raise policy.denied(item.type, item.id, interaction)

    def permitted_ids(self, resource_type: str, ids: list[str], interaction: str) -> list[str]:
        """`ids` of one type without what the request's access policy hides (all with auth off)."""
        policy = current_policy()
        if policy is None:
            return ids
        subset = policy.filter_ids(self, resource_type, ids, interaction)
        if subset is not None:
            return subset
        out = []
        for rid in ids:
            version = self.visible_read(resource_type, rid)
            if version is not None and policy.allows(self, resource_type, version.resource, interaction):
                out.append(rid)
        return out

    def permitted(self, refs: list[tuple[str, str]], interaction: str = "r") -> list[tuple[str, str]]:
        """`permitted_ids` for references of several types, in their order."""
        if current_policy() is None:
            return refs
        by_type: dict[str, list[str]] = {}
        for rtype, rid in refs:
            by_type.setdefault(rtype, []).append(rid)
        keep = {(t, rid) for t, ids in by_type.items() for rid in self.permitted_ids(t, ids, interaction)}
        return [ref for ref in refs if ref in keep]

    def parser(self, base_url: str = "") -> QueryParser:
        return QueryParser(self.site.registry, self.site.settings.max_count, base_url)

    def engine(self, base_url: str = "") -> SearchEngine:
        return SearchEngine(self.site.store, self.site.registry, base_url)

    def commit(self, writes: list[Write]) -> list[StoredVersion]:
        # lastUpdated has millisecond precision; keep it strictly increasing per site so that
        # `_since` and history order never confuse two commits made within the same millisecond.
        stamp = round(max(self.site.clock.timestamp(), self._last_stamp + 0.001), 3)
        self._last_stamp = stamp
        versions = self.site.store.commit(writes, instant_at(stamp), stamp)
        listeners = self.listeners
        if listeners:
            for version in versions:
                for listener in listeners.get(version.type, ()):
                    listener(version)
        limits = self.site.settings.retention
        if limits:
            self._retain(versions, limits)
        return versions

    def _retain(self, versions: list[StoredVersion], limits: dict[str, int]) -> None:
        """Keep at most `limits[type]` live resources of a type: past it, the least recently
        written are expunged, down to 1% below the limit (a batch per pass over the type, and a
        short pause: ~14 ms per 5,000 resources)."""
        store = self.site.store
        for rtype in {v.type for v in versions}:
            limit = limits.get(rtype)
            if limit is None:
                continue
            live = store.current(rtype)
            if len(live) <= limit:
                continue
            victims = list(itertools.islice(live, len(live) - limit + limit // 100))
            dropped = store.expunge(rtype, victims)
            for listener in self.listeners.get(rtype, ()):  # e.g. identifier indexes forget them
                for rid in victims:
                    listener(make_version((rtype, rid, 0, "", 0.0, "DELETE", None, 0)))
            journal = self.site.journal
            if journal.enabled:
                journal.record(
                    {
                        "protocol": "store",
                        "kind": "retention",
                        "site": self.site.id,
                        "client_id": None,
                        "faults": (),
                        "resource_type": rtype,
                        "expunged": len(victims),
                        "versions": dropped,
                        "limit": limit,
                    }
                )

    def watch(self, resource_type: str, listener: CommitListener) -> None:
        """Call `listener` with every version of `resource_type` committed from now on."""
        self.listeners.setdefault(resource_type, []).append(listener)

    def unwatch(self, resource_type: str, listener: CommitListener) -> None:
        watching = self.listeners.get(resource_type, [])
        if listener in watching:
            watching.remove(listener)
        if not watching:
            self.listeners.pop(resource_type, None)

    # -- reads -----------------------------------------------------------------------------------
    def visible_read(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The latest version a reader may see: with data latency, the last one already visible."""
        version = self.site.store.read(resource_type, resource_id)
        visible = self.visible
        if visible is None or version is None or visible(version):
            return version
        for number in range(version.version - 1, 0, -1):
            older = self.site.store.vread(resource_type, resource_id, number)
            if older is not None and visible(older):
                return older
        return None

    def read(self, resource_type: str, resource_id: str) -> StoredVersion:
        self.check_type(resource_type)
        policy = self.guard(resource_type, "r")
        version = self.visible_read(resource_type, resource_id)
        if version is None:
            raise not_found(resource_type, resource_id)
        if version.deleted:
            raise FHIRError.of(410, "deleted", f"Resource {resource_type}/{resource_id} has been deleted")
        self.check_access(policy, version, "r")
        return version

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> StoredVersion:
        self.check_type(resource_type)
        policy = self.guard(resource_type, "r")
        number = ascii_int(version_id)
        if number is None:
            raise not_found(resource_type, f"{resource_id}/_history/{version_id}")
        version = self.site.store.vread(resource_type, resource_id, number)
        if version is None or (self.visible is not None and not self.visible(version)):
            raise not_found(resource_type, f"{resource_id}/_history/{version_id}")
        if version.deleted:
            raise FHIRError.of(
                410, "deleted", f"Version {version_id} of {resource_type}/{resource_id} is a deletion"
            )
        self.check_access(policy, version, "r")
        return version

    def find(self, resource_type: str, criteria: str, base_url: str = "") -> list[str]:
        """Ids matching a conditional-interaction query string (If-None-Exist, conditional update)."""
        items = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if not items:
            raise FHIRError.of(400, "invalid", "Conditional criteria must not be empty")
        query = self.parser(base_url).parse(resource_type, items)
        return self.engine(base_url).ids(query)

    # -- writes ----------------------------------------------------------------------------------
    def prepare_create(self, resource_type: str, resource: Any) -> Write:
        self.check_type(resource_type)
        policy = self.guard(resource_type, "c")
        validate_resource(resource, resource_type)
        write = Write(resource_type, self.site.ids.new_id(resource_type), resource, "POST")
        self.check_access(policy, write, "c")
        return write

    def create(
        self, resource_type: str, resource: Any, if_none_exist: str | None = None, base_url: str = ""
    ) -> Result:
        if if_none_exist:
            existing = self._conditional_match(resource_type, if_none_exist, base_url)
            if existing is not None:
                return Result(200, existing)
        write = self.prepare_create(resource_type, resource)
        return Result(201, self.commit([write])[0])

    def _conditional_match(self, resource_type: str, criteria: str, base_url: str) -> StoredVersion | None:
        self.check_type(resource_type)
        ids = self.find(resource_type, criteria, base_url)
        if len(ids) > 1:
            raise FHIRError.of(
                412,
                "multiple-matches",
                f"{len(ids)} resources match the condition '{criteria}'; expected at most one",
            )
        return self.site.store.read(resource_type, ids[0]) if ids else None

    def prepare_update(
        self, resource_type: str, resource_id: str, resource: Any, if_match: str | None = None
    ) -> tuple[Write, bool]:
        """The write for an update and whether it creates the resource."""
        self.check_type(resource_type)
        if not ID_PATTERN.match(resource_id):
            raise FHIRError.of(400, "value", f"'{resource_id}' is not a valid FHIR id", expression=["id"])
        validate_resource(resource, resource_type)
        body_id = resource.get("id")
        if body_id is None:
            raise FHIRError.of(
                400,
                "required",
                "An update must carry the resource id in the body",
                expression=[f"{resource_type}.id"],
            )
        if body_id != resource_id:
            raise FHIRError.of(
                400,
                "invalid",
                f"The body's id '{body_id}' does not match the URL's id '{resource_id}'",
                expression=[f"{resource_type}.id"],
            )
        current = self.site.store.read(resource_type, resource_id)
        if if_match is not None:
            wanted = _etag_version(if_match)
            if current is None or current.deleted or str(current.version) != wanted:
                have = "no version" if current is None or current.deleted else f'W/"{current.version}"'
                raise FHIRError.of(
                    412, "conflict", f"If-Match {if_match} does not match the current version ({have})"
                )
        creates = current is None or current.deleted
        write = Write(resource_type, resource_id, resource, "PUT")
        policy = self.guard(resource_type, "c" if creates else "u")
        if not creates:  # a resource may not be moved into (or out of) the grant by an update
            self.check_access(policy, current, "u")
        self.check_access(policy, write, "c" if creates else "u")
        return write, creates

    def update(
        self, resource_type: str, resource_id: str, resource: Any, if_match: str | None = None
    ) -> Result:
        write, creates = self.prepare_update(resource_type, resource_id, resource, if_match)
        return Result(201 if creates else 200, self.commit([write])[0])

    def conditional_update(
        self, resource_type: str, criteria: str, resource: Any, base_url: str = ""
    ) -> Result:
        existing = self._conditional_match(resource_type, criteria, base_url)
        if existing is None:
            if isinstance(resource, dict) and resource.get("id"):
                return self.update(resource_type, resource["id"], resource)
            return self.create(resource_type, resource)
        if isinstance(resource, dict) and resource.get("id") not in (None, existing.id):
            raise FHIRError.of(
                400, "invalid", "The body's id does not match the resource found by the condition"
            )
        body = dict(resource) if isinstance(resource, dict) else resource
        if isinstance(body, dict):
            body["id"] = existing.id
        return self.update(resource_type, existing.id, body)

    def prepare_delete(self, resource_type: str, resource_id: str) -> Write | None:
        self.check_type(resource_type)
        current = self.site.store.read(resource_type, resource_id)
        if current is None:
            raise not_found(resource_type, resource_id)
        if current.deleted:
            return None
        self.check_access(self.guard(resource_type, "d"), current, "d")
        return Write(resource_type, resource_id, None, "DELETE")

    def delete(self, resource_type: str, resource_id: str) -> Result:
        write = self.prepare_delete(resource_type, resource_id)
        if write is None:
            return Result(204)
        return Result(
            200, self.commit([write])[0], information_outcome(f"Deleted {resource_type}/{resource_id}")
        )

    def conditional_delete(self, resource_type: str, criteria: str, base_url: str = "") -> Result:
        existing = self._conditional_match(resource_type, criteria, base_url)
        if existing is None:
            return Result(204)
        return self.delete(resource_type, existing.id)

    # -- search, history, $everything ------------------------------------------------------------
    def search(
        self,
        resource_type: str,
        items: Iterable[tuple[str, str]],
        base_url: str,
        lenient: bool = False,
    ) -> dict[str, Any]:
        self.check_type(resource_type)
        lenient = lenient or self.site.settings.unknown_parameters == "lenient"
        self.guard(resource_type, "s")
        query = self.parser(base_url).parse(resource_type, items, lenient=lenient)
        ids = self.engine(base_url).ids(query)
        if self.visible is not None:
            ids = [rid for rid in ids if self.visible_read(resource_type, rid) is not None]
        snapshot = SearchSnapshot(
            refs=[(resource_type, rid) for rid in self.permitted_ids(resource_type, ids, "s")],
            query=query,
            self_params=query.self_params(),
            self_path=resource_type,
        )
        return self.render_page(snapshot, base_url, offset=0, count=query.count)

    def history(
        self,
        base_url: str,
        resource_type: str | None = None,
        resource_id: str | None = None,
        items: Iterable[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        if resource_type:
            self.check_type(resource_type)
            self.guard(resource_type, "r" if resource_id else "s")
        if resource_type and resource_id and self.site.store.read(resource_type, resource_id) is None:
            raise not_found(resource_type, resource_id)
        count, since, params = None, None, []
        for name, value in items:
            if name == "_count":
                count = self._page_size(value)
                params.append((name, value))
            elif name == "_since":
                try:
                    since = date_range(value.replace(" ", "+"))[0]
                except BadValue as exc:
                    raise FHIRError.of(400, "invalid", f"_since: {exc}", expression=["_since"]) from None
                params.append((name, value))
            elif name not in ("_format", "_pretty"):
                raise FHIRError.of(
                    400, "not-supported", f"History does not support parameter '{name}'", expression=[name]
                )
        versions = self.site.store.history(resource_type, resource_id, since)
        if self.visible is not None:
            versions = [v for v in versions if self.visible(v)]
        policy = current_policy()
        if policy is not None:
            versions = [v for v in versions if policy.allows(self, v.type, v.resource, "r")]
        path = "/".join(p for p in (resource_type, resource_id) if p) + (
            "/_history" if resource_type else "_history"
        )
        snapshot = SearchSnapshot(
            refs=[], query=None, self_params=params, self_path=path, bundle_type="history", versions=versions
        )
        return self.render_page(snapshot, base_url, offset=0, count=count)

    def _page_size(self, value: str) -> int:
        """A `_count` of history or $everything, capped by the site's max_count (a 400 when it is
        not a number)."""
        number = ascii_int(value)
        if number is None:
            raise FHIRError.of(400, "invalid", "_count must be a non-negative integer", expression=["_count"])
        return min(number, self.site.settings.max_count)

    def everything(
        self, patient_id: str, base_url: str, items: Iterable[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        patient = self.read("Patient", patient_id)
        count = None
        types_filter: set[str] | None = None
        params = []
        for name, value in items:
            if name == "_count":
                count = self._page_size(value)
                params.append((name, value))
            elif name == "_type":
                types_filter = set(value.split(","))
                params.append((name, value))
            elif name not in ("_format", "_pretty"):
                raise FHIRError.of(
                    400,
                    "not-supported",
                    f"$everything does not support parameter '{name}'",
                    expression=[name],
                )
        refs: list[tuple[str, str]] = [("Patient", patient.id)]
        seen = set(refs)
        key = f"Patient/{patient.id}"
        for rtype in self.site.resource_types():
            if rtype == "Patient" or (types_filter is not None and rtype not in types_filter):
                continue
            param = compartment_param(self.site, rtype)
            if param is None:
                continue
            for rid in self._ordered(rtype, self.site.store.postings(rtype, param).get(key, set())):
                ref = (rtype, rid)
                if ref not in seen:
                    seen.add(ref)
                    refs.append(ref)
                    # Referenced practitioners, organizations, locations and medications travel along.
                    for target in _referenced(self.site.store.read(rtype, rid).resource):
                        if target not in seen and target[0] != "Patient" and self.site.supports(target[0]):
                            current = self.site.store.read(*target)
                            if current is not None and not current.deleted:
                                seen.add(target)
                                refs.append(target)
        snapshot = SearchSnapshot(
            refs=self.permitted(refs),
            query=None,
            self_params=params,
            self_path=f"Patient/{patient.id}/$everything",
        )
        return self.render_page(snapshot, base_url, offset=0, count=count)

    def _ordered(self, rtype: str, ids: set[str]) -> list[str]:
        return [rid for rid in self.site.store.current(rtype) if rid in ids]

    def page(self, key: str, offset: int, count: int | None, base_url: str) -> dict[str, Any]:
        snapshot = self.site.snapshots.get(key)
        if snapshot is None:
            raise FHIRError.of(
                410, "not-found", "The search results for this page link have expired; run the search again"
            )
        return self.render_page(snapshot, base_url, offset=offset, count=count, key=key)

    def render_page(
        self,
        snapshot: SearchSnapshot,
        base_url: str,
        offset: int,
        count: int | None,
        key: str | None = None,
    ) -> dict[str, Any]:
        settings = self.site.settings
        query = snapshot.query
        default, maximum = settings.count_limits(query.resource_type if query else None)
        count = default if count is None else min(count, maximum)
        history = snapshot.versions is not None
        total = len(snapshot.versions) if history else len(snapshot.refs)
        bundle = bundle_shell(self.site, snapshot.bundle_type)
        if query is None or query.total != "none":
            bundle["total"] = total
        if query is not None and query.summary == "count":
            bundle["link"] = [
                {"relation": "self", "url": self_link(base_url, snapshot.self_path, snapshot.self_params)}
            ]
            return bundle
        links = []
        if offset == 0 and key is None:
            links.append(
                {"relation": "self", "url": self_link(base_url, snapshot.self_path, snapshot.self_params)}
            )
        needs_paging = total > offset + count or offset > 0
        if needs_paging and key is None:
            key = self.site.snapshots.put(snapshot)
        if key is not None:
            style = paging_style(settings.paging)
            last = max(0, ((total - 1) // count) * count) if count else 0
            pages = [("self", offset if offset else None), ("first", 0)]
            pages.append(("previous", max(0, offset - count) if offset > 0 else None))
            pages.append(("next", offset + count if total > offset + count else None))
            pages.append(("last", last))
            for relation, at in pages:
                if at is not None and relation in style.relations:
                    links.append(
                        {
                            "relation": relation,
                            "url": style.link(base_url, snapshot, key, at, count, relation),
                        }
                    )
        bundle["link"] = links
        entries: list[dict[str, Any]] = []
        if history:
            assert snapshot.versions is not None
            entries = [history_entry(base_url, v) for v in snapshot.versions[offset : offset + count]]
        else:
            entries = self._search_entries(snapshot, base_url, offset, count)
        if entries:
            bundle["entry"] = entries
        return bundle

    def _search_entries(
        self, snapshot: SearchSnapshot, base_url: str, offset: int, count: int
    ) -> list[dict[str, Any]]:
        query = snapshot.query
        summary = query.summary if query else None
        elements = query.elements if query else None
        entries: list[dict[str, Any]] = []
        if offset == 0 and query is not None:
            outcome = ignored_outcome(query)
            if outcome is not None:
                entries.append({"resource": outcome, "search": {"mode": "outcome"}})
        page: list[StoredVersion] = []
        for rtype, rid in snapshot.refs[offset : offset + count]:
            version = self.visible_read(rtype, rid)
            if version is None or version.deleted:
                continue  # deleted since the search ran: the snapshot keeps paging stable otherwise
            page.append(version)
            entries.append(
                {
                    "fullUrl": f"{base_url}/{rtype}/{rid}",
                    "resource": subset(version.resource, summary, elements),
                    "search": {"mode": "match"},
                }
            )
        if query is not None and (query.includes or query.revincludes):
            seen = {(v.type, v.id) for v in page}
            for version in self._included(query, page, seen):
                entries.append(
                    {
                        "fullUrl": f"{base_url}/{version.type}/{version.id}",
                        "resource": subset(version.resource, summary, elements),
                        "search": {"mode": "include"},
                    }
                )
        return entries

    def _included(self, query: SearchQuery, page: list[StoredVersion], seen: set) -> list[StoredVersion]:
        store = self.site.store
        out: list[StoredVersion] = []
        for include in query.includes:
            values = store.values(include.source_type, include.param)
            for version in page:
                for key in values.get(version.id, ()):
                    if "/" not in key or key.startswith(("http", "urn:", "identifier:")):
                        continue
                    rtype, rid = key.split("/", 1)
                    if include.target_type and rtype != include.target_type:
                        continue
                    self._add(out, seen, rtype, rid)
        for include in query.revincludes:
            if not self.site.supports(include.source_type):
                continue
            postings = store.postings(include.source_type, include.param)
            for version in page:
                for rid in self._ordered(
                    include.source_type, postings.get(f"{version.type}/{version.id}", set())
                ):
                    self._add(out, seen, include.source_type, rid)
        return out

    def _add(self, out: list[StoredVersion], seen: set, rtype: str, rid: str) -> None:
        if (rtype, rid) in seen or not self.site.supports(rtype):
            return
        version = self.site.store.read(rtype, rid)
        policy = current_policy()
        if version is not None and not version.deleted:
            if policy is not None and not policy.allows(self, rtype, version.resource, "r"):
                return
            seen.add((rtype, rid))
            out.append(version)


def compartment_param(site: Site, resource_type: str) -> Any | None:
    """The reference parameter that puts a resource in a patient's compartment, if any."""
    for code in ("patient", "subject", "beneficiary", "individual"):
        param = site.registry.get(resource_type, code)
        if (
            param is not None
            and param.type == "reference"
            and (not param.targets or "Patient" in param.targets)
        ):
            return param
    return None


def _referenced(resource: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    stack = [resource]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("reference")
            if isinstance(ref, str) and ref.count("/") == 1 and not ref.startswith(("#", "urn:")):
                rtype, rid = ref.split("/")
                out.append((rtype, rid))
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _etag_version(etag: str) -> str:
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def information_outcome(text: str) -> dict[str, Any]:
    """An OperationOutcome that only informs (a delete done, an export accepted)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": text}],
    }
