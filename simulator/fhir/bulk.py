"""FHIR Bulk Data export (`$export`, Bulk Data Access IG v2.0.0) for one site; docs/bulk-data.md.

Kick-off (`[base]/$export`, `Patient/$export`, `Group/[id]/$export`) freezes the exported versions
at once: stored versions are immutable, so holding them is a snapshot that later writes cannot
touch, and `transactionTime` is the kick-off instant. The export then "runs" for the site's
`bulk_export.delay` of simulated time: the status URL answers 202 (`X-Progress`, `Retry-After`)
until the site's clock passes it, then 200 with the manifest. Files are NDJSON rendered on
download; manifest and files expire `bulk_export.expires_after` (simulated) after completion.
`_typeFilter` and `_elements` are in `bulk_filters.py`; with `_since`, the deletions after it are
listed as `deleted` files of transaction Bundles.

    status: [base]/_bulk/{job}              GET (poll), DELETE (cancel / forget)
    files:  [base]/_bulk/{job}/{Type}-{n}.ndjson, [base]/_bulk/{job}/Bundle-deleted-{n}.ndjson

Job ids come from an RNG seeded with the scenario seed and the site: same requests, same URLs.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from simulator.clock import fhir_instant, http_date
from simulator.faults.schedule import parse_duration
from simulator.fhir.access import current_policy
from simulator.fhir.bulk_filters import element_lists, matching_ids, split_type_filters, type_filters
from simulator.fhir.bulk_provenance import RELEVANT, associated_data, provenance_of
from simulator.fhir.bundles import subset
from simulator.fhir.errors import FHIRError, operation_outcome
from simulator.fhir.search import SearchQuery
from simulator.fhir.service import FhirService, compartment_param
from simulator.fhir.values import BadValue, date_range, is_instant
from simulator.population.export import ndjson_line
from simulator.site import Site
from simulator.store.base import StoredVersion

BULK_PATH = "_bulk"  # the status and file URLs live below [base]/_bulk/
NDJSON = "application/fhir+ndjson"
MANIFEST = "application/json"
OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
# IG parameters ehrsim does not implement: refused by name rather than ignored.
UNSUPPORTED = ("patient", "organizeOutputBy")  # patient: POST only
SUPPORTED = ("_type", "_since", "_outputFormat", "_typeFilter", "_elements", "includeAssociatedData")
REPEATABLE = ("_typeFilter",)
OPERATIONS = {
    "system": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    "Patient": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
    "Group": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
}
# For the CapabilityStatement's export operations: what a client may send.
OPERATION_DOCUMENTATION = (
    "Supported parameters: _type, _since, _outputFormat (application/fhir+ndjson), _typeFilter, "
    "_elements, includeAssociatedData (LatestProvenanceResources, RelevantProvenanceResources), and "
    "(POST, Patient and Group level) patient. Not supported: organizeOutputBy. With _since the "
    "manifest lists deletions in `deleted`."
)
DEFAULT_DELAY = 2.0
DEFAULT_PER_FILE = 10_000
DEFAULT_EXPIRES_AFTER = 3600.0
SETTINGS = ("delay", "resources_per_file", "expires_after")
_FILE = re.compile(r"^([A-Z][A-Za-z]*)(?:-deleted|-error)?-(\d+)\.ndjson$")
ERROR_FILE = "OperationOutcome-error-1.ndjson"  # the messages of a job, when it has any


@dataclass(frozen=True, slots=True)
class BulkExportSettings:
    """A site's `settings.bulk_export`: how long an export takes and its files are kept (simulated),
    and file size."""

    delay: float = DEFAULT_DELAY  # simulated seconds from kick-off to a complete manifest
    resources_per_file: int = DEFAULT_PER_FILE
    expires_after: float = DEFAULT_EXPIRES_AFTER  # simulated seconds from completion to expiry

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> BulkExportSettings:
        data = dict(data or {})
        unknown = sorted(set(data) - set(SETTINGS))
        if unknown:
            raise ValueError(
                f"unknown bulk_export settings: {', '.join(unknown)} (known: {', '.join(SETTINGS)})"
            )
        delay = parse_duration(data.get("delay", DEFAULT_DELAY), "bulk_export.delay")
        expires = parse_duration(
            data.get("expires_after", DEFAULT_EXPIRES_AFTER), "bulk_export.expires_after"
        )
        if expires <= 0:
            raise ValueError(f"bulk_export.expires_after must be longer than 0s, not {expires:g}s")
        per_file = data.get("resources_per_file", DEFAULT_PER_FILE)
        if not isinstance(per_file, int) or isinstance(per_file, bool) or per_file < 1:
            raise ValueError(f"bulk_export.resources_per_file must be a positive integer, not {per_file!r}")
        return cls(delay, per_file, expires)


@dataclass(frozen=True, slots=True)
class ExportFile:
    type: str  # Bundle for the files of deletions
    name: str  # {Type}-{n}.ndjson, Bundle-deleted-{n}.ndjson
    versions: tuple[StoredVersion, ...]  # deletion markers in a `deleted` file
    elements: tuple[str, ...] | None = None  # _elements: the elements the resources keep


@dataclass(slots=True)
class ExportJob:
    id: str
    request: str  # the kick-off URL, for the manifest
    transaction_time: str
    started: float  # simulated seconds since the clock start
    ready_at: float
    expires_at: float  # simulated seconds since the clock start; from then on status and files are 404
    requires_token: bool
    types: tuple[str, ...]  # what a token must be allowed to read to see the status and files
    files: dict[str, ExportFile] = field(default_factory=dict)
    deleted: dict[str, ExportFile] = field(default_factory=dict)  # the manifest's `deleted` files
    messages: list[dict[str, Any]] = field(default_factory=list)  # OperationOutcomes for `error`


class BulkExports:
    """The export jobs of one site; forgotten on `/_admin/reset`."""

    def __init__(self, site: Site, service: FhirService) -> None:
        self.site = site
        self.service = service
        # Parsed now so that a bad setting stops the scenario load; again if a profile switch
        # replaces the site's settings.
        self._raw = site.settings.bulk_export
        self.settings = _parse_settings(site)
        self.jobs: dict[str, ExportJob] = {}
        self._rng = random.Random(f"{site.seed}/{site.id}/bulk")
        site.extras.setdefault("on_reset", []).append(self.reset)

    def _settings(self) -> BulkExportSettings:
        raw = self.site.settings.bulk_export
        if raw is not self._raw:
            self._raw, self.settings = raw, _parse_settings(self.site)
        return self.settings

    def reset(self) -> None:
        self.jobs.clear()
        self._rng = random.Random(f"{self.site.seed}/{self.site.id}/bulk")

    # -- kick-off --------------------------------------------------------------------------------
    def kick_off(
        self,
        level: str,
        items: list[tuple[str, str]],
        request_url: str,
        prefer: str,
        accept: str,
        group_id: str | None = None,
        patients: list[str] | None = None,
        base_url: str = "",
        lenient: bool = False,
    ) -> ExportJob:
        """Start an export of `level` (system, Patient or Group) and return its job; `patients`
        (a POST's `patient` parameters) narrows a Patient or Group export to those patients.
        `lenient` (`Prefer: handling=lenient`) lets `_typeFilter` drop unknown search parameters
        as a search does."""
        if "respond-async" not in [p.strip() for p in prefer.replace(";", ",").split(",")]:
            raise FHIRError.of(
                400, "required", "$export is asynchronous: send the header 'Prefer: respond-async'"
            )
        if "application/fhir+json" not in [p.split(";")[0].strip().lower() for p in accept.split(",")]:
            raise FHIRError.of(
                400,
                "required",
                f"$export needs the header 'Accept: application/fhir+json' (got {accept or 'none'!r})",
            )
        params, filters = _parameters(items)
        members = self._members(level, group_id)
        if patients is not None and members is not None:
            unknown = [pid for pid in patients if pid not in members]
            if unknown:
                raise FHIRError.of(
                    404 if level == "Patient" else 400,
                    "not-found" if level == "Patient" else "invalid",
                    f"patient: Patient/{unknown[0]} is not "
                    + ("on this server" if level == "Patient" else f"a member of Group/{group_id}"),
                    expression=["patient"],
                )
            members = set(patients)
        since = _since(params.get("_since"))
        types = self._types(level, params.get("_type"))
        exportable, scope = self._exportable(level, params.get("_type"))
        lenient = lenient or self.site.settings.unknown_parameters == "lenient"  # as search does
        queries, dropped = type_filters(self.service, filters, exportable, scope, base_url, lenient)
        associated, ignored = (
            associated_data(params["includeAssociatedData"], lenient)
            if "includeAssociatedData" in params
            else (None, [])
        )
        if associated is not None and "Provenance" not in exportable:
            exportable = [*exportable, "Provenance"]  # so that `_elements` may name it
        elements = (
            element_lists(params["_elements"], exportable, scope, self.site.resource_types())
            if "_elements" in params
            else {}
        )
        by_type: dict[str, list[StoredVersion]] = {}
        for rtype in types:
            if rtype == "Provenance" and associated is not None:
                continue  # replaced by the Provenance of what is exported
            matched = matching_ids(self.service, queries[rtype], base_url) if rtype in queries else None
            by_type[rtype] = self._versions(rtype, members, since, matched)
        if associated is not None:
            chosen = self._provenance(by_type, associated, queries, base_url)
            by_type["Provenance"] = self._versions("Provenance", None, None, chosen)
        elif members is not None and "Provenance" in by_type:
            # The IG: without includeAssociatedData a patient-level export holds every Provenance
            # whose target is in the compartment, not only those that target the Patient itself.
            own = {v.id for v in by_type["Provenance"]}
            others = {t: vs for t, vs in by_type.items() if t != "Provenance"}
            extra = self._provenance(others, RELEVANT, queries, base_url)
            if extra - own:
                by_type["Provenance"] = self._versions("Provenance", None, since, own | extra)
        settings = self._settings()
        clock = self.site.clock
        started = clock.elapsed()
        job = ExportJob(
            id=f"{self._rng.getrandbits(128):032x}",
            request=request_url,
            transaction_time=fhir_instant(clock.now()),
            started=started,
            ready_at=started + settings.delay,
            expires_at=started + settings.delay + settings.expires_after,
            requires_token=current_policy() is not None,
            types=tuple(sorted(by_type)),
            messages=[operation_outcome([issue]) for issue in [*dropped, *ignored]],
        )
        per_file = settings.resources_per_file
        for rtype, versions in sorted(by_type.items()):
            for n, at in enumerate(range(0, len(versions), per_file), 1):
                name = f"{rtype}-{n}.ndjson"
                chunk = tuple(versions[at : at + per_file])
                job.files[name] = ExportFile(rtype, name, chunk, elements.get(rtype))
        if since is not None:
            markers = self._deletions(types, members, since)
            for n, at in enumerate(range(0, len(markers), per_file), 1):
                name = f"Bundle-deleted-{n}.ndjson"
                job.deleted[name] = ExportFile("Bundle", name, tuple(markers[at : at + per_file]))
        self.jobs[job.id] = job
        return job

    def _provenance(
        self,
        by_type: dict[str, list[StoredVersion]],
        mode: str,
        queries: dict[str, list[SearchQuery]],
        base_url: str,
    ) -> set[str]:
        """Ids of the Provenance (`mode`) of the resources in `by_type`, narrowed by a Provenance
        `_typeFilter`; 403 unless the token may read Provenance."""
        policy = current_policy()
        if policy is not None:
            policy.require("Provenance", "r")
        chosen = provenance_of(self.service, (v for vs in by_type.values() for v in vs), mode)
        if "Provenance" in queries:
            chosen &= matching_ids(self.service, queries["Provenance"], base_url)
        return chosen

    def _members(self, level: str, group_id: str | None) -> set[str] | None:
        """The patient ids whose compartments are exported; None: the whole system."""
        if level == "system":
            return None
        if level == "Patient":
            return set(self.site.store.current("Patient"))
        assert group_id is not None
        group = self.service.read("Group", group_id)
        members = set()
        for member in group.resource.get("member") or ():
            ref = (member.get("entity") or {}).get("reference", "")
            if ref.startswith("Patient/") and not member.get("inactive"):
                members.add(ref.split("/", 1)[1])
        return members

    def _allowed(self, level: str) -> list[str]:
        """The types an export at this level can hold (system: all served; else the compartment)."""
        served = self.site.resource_types()
        if level == "system":
            return served
        return [t for t in served if t == "Patient" or compartment_param(self.site, t) is not None]

    def _exportable(self, level: str, requested: str | None) -> tuple[list[str], str]:
        """The types `_typeFilter` and `_elements` may name, and how to say which they are."""
        if requested is not None:
            names = sorted(dict.fromkeys(t.strip() for t in requested.split(",")))
            return names, f"in _type ({', '.join(names)})"
        return self._allowed(level), f"a type a {level}-level export holds"

    def _types(self, level: str, requested: str | None) -> list[str]:
        served = self.site.resource_types()
        allowed = self._allowed(level)
        policy = current_policy()
        if requested is not None:
            names = [t.strip() for t in requested.split(",")]
            for name in names:
                if name not in served:
                    raise FHIRError.of(
                        400,
                        "not-supported",
                        f"_type: '{name}' is not a resource type this server exports",
                        expression=["_type"],
                    )
                if name not in allowed:
                    raise FHIRError.of(
                        400,
                        "not-supported",
                        f"_type: {name} is not in the Patient compartment, so a {level}-level export "
                        "has none; use the system-level [base]/$export",
                        expression=["_type"],
                    )
                if policy is not None:
                    policy.require(name, "r")
            return sorted(dict.fromkeys(names))
        stored = set(self.site.store.resource_types())
        types = sorted(t for t in allowed if t in stored)
        if policy is None:
            return types
        readable = [t for t in types if _may_read(policy, t)]
        if types and not readable:
            raise FHIRError.of(
                403,
                "forbidden",
                "The access token's scopes allow reading none of the exported resource types",
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            )
        return readable  # without _type: the types the grant covers (docs/bulk-data.md)

    def _versions(
        self, rtype: str, members: set[str] | None, since: float | None, matched: set[str] | None
    ) -> list[StoredVersion]:
        store, service = self.site.store, self.service
        current = store.current(rtype)
        ids = list(current) if matched is None else [rid for rid in current if rid in matched]
        if members is not None:
            if rtype == "Patient":
                ids = [rid for rid in ids if rid in members]
            else:
                postings = store.postings(rtype, compartment_param(self.site, rtype))
                inside = set().union(*(postings.get(f"Patient/{pid}", ()) for pid in members))
                ids = [rid for rid in ids if rid in inside]
        ids = service.permitted_ids(rtype, ids, "r")
        if service.visible is None:
            versions = [current[rid] for rid in ids]
        else:  # data latency: what a reader could see now
            versions = [v for rid in ids if (v := service.visible_read(rtype, rid)) and not v.deleted]
        if since is not None:
            versions = [v for v in versions if v.timestamp > since]
        return versions

    def _deletions(self, types: list[str], members: set[str] | None, since: float) -> list[StoredVersion]:
        """The deletion markers, oldest first, of resources of `types` deleted after `since` and
        still deleted now, that the export would have held: in the compartments of `members` and
        readable under the token, both judged on the version before the deletion. `_typeFilter` is
        not applied (the search indexes hold live resources only)."""
        store, service = self.site.store, self.service
        wanted = set(types)
        policy = current_policy()
        member_refs = None if members is None else {f"Patient/{pid}" for pid in members}
        out: list[StoredVersion] = []
        for marker in reversed(store.history(None, None, since)):
            if not marker.deleted or marker.type not in wanted or marker.timestamp <= since:
                continue
            latest = store.read(marker.type, marker.id)
            if latest is None or latest.seq != marker.seq:
                continue  # written again since: live (and exported) or deleted again later
            if service.visible is not None and not service.visible(marker):
                continue
            before = store.vread(marker.type, marker.id, marker.version - 1)
            if before is None or before.resource is None:
                continue  # expunged history: nothing to judge the deletion by
            if member_refs is not None and not self._in_compartments(before, member_refs):
                continue
            if policy is not None and not policy.allows(service, marker.type, before.resource, "r"):
                continue
            out.append(marker)
        return out

    def _in_compartments(self, version: StoredVersion, member_refs: set[str]) -> bool:
        if version.type == "Patient":
            return f"Patient/{version.id}" in member_refs
        param = compartment_param(self.site, version.type)
        assert version.resource is not None and param is not None
        return any(ref in member_refs for ref in param.values(version.resource))

    # -- status, files, delete ---------------------------------------------------------------------
    def job(self, job_id: str) -> ExportJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise FHIRError.of(
                404, "not-found", f"No bulk export job '{job_id}' (never started, deleted, or reset)"
            )
        policy = current_policy()
        if policy is not None:
            for rtype in job.types:
                policy.require(rtype, "r")
        if self.site.clock.elapsed() >= job.expires_at:
            job.files.clear()  # what an expired job held is not needed again
            job.deleted.clear()
            job.messages.clear()
            expired = fhir_instant(self.site.clock.at(job.expires_at))
            raise FHIRError.of(
                404,
                "not-found",
                f"Bulk export job '{job_id}' expired at {expired}; its files are gone, kick off a new export",
            )
        return job

    def expires(self, job: ExportJob) -> str:
        """The `Expires` header of a completed job's status and files (an HTTP-date, simulated)."""
        return http_date(self.site.clock.at(job.expires_at))

    def progress(self, job: ExportJob) -> dict[str, str] | None:
        """The 202 headers while the job runs; None once it is complete."""
        now = self.site.clock.elapsed()
        if now >= job.ready_at:
            return None
        done = (now - job.started) / (job.ready_at - job.started)
        return {
            "X-Progress": f"{int(done * 100)}% (in progress)",
            "Retry-After": str(max(1, math.ceil(job.ready_at - now))),
        }

    def manifest(self, job: ExportJob, base_url: str) -> dict[str, Any]:
        def listed(files: dict[str, ExportFile]) -> list[dict[str, Any]]:
            return [
                {"type": f.type, "url": f"{base_url}/{BULK_PATH}/{job.id}/{f.name}", "count": len(f.versions)}
                for f in files.values()
            ]

        return {
            "transactionTime": job.transaction_time,
            "request": job.request,
            "requiresAccessToken": job.requires_token,
            "output": listed(job.files),
            "deleted": listed(job.deleted),
            "error": [
                {
                    "type": "OperationOutcome",
                    "url": f"{base_url}/{BULK_PATH}/{job.id}/{ERROR_FILE}",
                    "count": len(job.messages),
                }
            ]
            if job.messages
            else [],
        }

    def cancel(self, job_id: str) -> None:
        self.job(job_id)
        del self.jobs[job_id]

    def file(self, job_id: str, name: str) -> bytes:
        job = self.job(job_id)
        if self.progress(job) is not None:
            raise FHIRError.of(404, "not-found", f"Bulk export job '{job_id}' is still in progress")
        if name == ERROR_FILE and job.messages:
            return b"".join(ndjson_line(outcome) for outcome in job.messages)
        found = job.files.get(name) or job.deleted.get(name)
        if found is None:
            raise FHIRError.of(404, "not-found", f"Bulk export job '{job_id}' has no file '{name}'")
        if name in job.deleted:
            return b"".join(ndjson_line(_deletion_bundle(job, v)) for v in found.versions)
        elements = list(found.elements) if found.elements is not None else None
        return b"".join(
            ndjson_line(subset(v.resource, None, elements)) for v in found.versions if v.resource is not None
        )


def _deletion_bundle(job: ExportJob, marker: StoredVersion) -> dict[str, Any]:
    """One line of a `deleted` file: a transaction Bundle whose one entry DELETEs the resource."""
    return {
        "resourceType": "Bundle",
        "id": f"deleted-{marker.seq}",  # unique in the store and the same for the same requests
        "meta": {"lastUpdated": job.transaction_time},
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"{marker.type}/{marker.id}"}}],
    }


def _parse_settings(site: Site) -> BulkExportSettings:
    try:
        return BulkExportSettings.from_mapping(site.settings.bulk_export)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"site {site.id}: settings.bulk_export: {exc}") from None


def file_type(name: str) -> str | None:
    """The resource type a file name (`Observation-2.ndjson`) holds, for the journal."""
    match = _FILE.match(name)
    return match.group(1) if match else None


def _may_read(policy: Any, resource_type: str) -> bool:
    try:
        policy.require(resource_type, "r")
    except FHIRError:
        return False
    return True


def export_parameters(body: Any, level: str) -> tuple[list[tuple[str, str]], list[str] | None]:
    """A POST kick-off's Parameters resource as (name, value) pairs like a GET's query, and the
    ids its `patient` parameters name (None without any); 400 for anything else."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FHIRError.of(400, "invalid", "A POST $export needs a Parameters resource as its body")
    items: list[tuple[str, str]] = []
    patients: list[str] = []
    parameters = body.get("parameter") or []
    if not isinstance(parameters, list):
        raise FHIRError.of(400, "invalid", "Parameters.parameter must be an array", expression=["parameter"])
    for parameter in parameters:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            raise FHIRError.of(
                400, "invalid", f"each $export parameter needs a name (a string), not {name!r}"
            )
        if name == "patient":
            if level == "system":
                raise FHIRError.of(
                    400,
                    "not-supported",
                    "patient applies to Patient- and Group-level exports",
                    expression=["patient"],
                )
            value = parameter.get("valueReference")
            reference = value.get("reference") if isinstance(value, dict) else None
            if (
                not isinstance(reference, str)
                or not reference.startswith("Patient/")
                or reference == "Patient/"
            ):
                raise FHIRError.of(
                    400,
                    "invalid",
                    f"patient needs valueReference Patient/[id], not {reference!r}",
                    expression=["patient"],
                )
            patients.append(reference[len("Patient/") :])
            continue
        values = [v for k, v in parameter.items() if k.startswith("value") and isinstance(v, str)]
        if len(values) != 1:
            raise FHIRError.of(
                400, "invalid", f"$export parameter {name!r} needs one value (valueString, valueInstant, ...)"
            )
        items.append((name, values[0]))
    return items, patients or None


def _parameters(items: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The single-valued parameters by name, and every `_typeFilter` filter."""
    params: dict[str, str] = {}
    filters: list[str] = []
    for name, value in items:
        if name in UNSUPPORTED:
            raise FHIRError.of(
                400,
                "not-supported",
                f"$export parameter '{name}' is not supported by ehrsim",
                expression=[name],
            )
        if name not in SUPPORTED:
            raise FHIRError.of(
                400,
                "not-supported",
                f"Unknown $export parameter '{name}' (supported: {', '.join(SUPPORTED)})",
                expression=[name],
            )
        if name in params:
            raise FHIRError.of(
                400, "invalid", f"$export parameter '{name}' is given more than once", expression=[name]
            )
        if not value.strip():
            raise FHIRError.of(400, "invalid", f"$export parameter '{name}' is empty", expression=[name])
        if name in REPEATABLE:
            filters.extend(split_type_filters([value]))
        else:
            params[name] = value
    fmt = params.get("_outputFormat")
    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise FHIRError.of(
            400,
            "not-supported",
            f"_outputFormat '{fmt}' is not supported (use {', '.join(OUTPUT_FORMATS)})",
            expression=["_outputFormat"],
        )
    return params, filters


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.replace(" ", "+")  # an unencoded '+' in the query string arrives as a space
    if not is_instant(text):
        raise FHIRError.of(
            400,
            "invalid",
            f"_since '{value}' is not a FHIR instant (e.g. 2026-01-01T00:00:00Z)",
            expression=["_since"],
        )
    try:
        return date_range(text)[0]
    except BadValue as exc:
        raise FHIRError.of(400, "invalid", f"_since: {exc}", expression=["_since"]) from None
