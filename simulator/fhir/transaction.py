"""Batch and transaction Bundles (POST [base]).

A transaction is all or nothing: every entry is validated and turned into a write first, `urn:uuid:`
references between entries are resolved to the ids the server assigns, and the writes are committed
in one store commit. A batch runs each entry on its own and reports each entry's status.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from simulator.fhir.bundles import bundle_shell
from simulator.fhir.errors import FHIRError, Issue, operation_outcome
from simulator.fhir.service import FhirService, Result
from simulator.store.base import StoredVersion, Write

# Set per request by a layer that charges bundle entries (rate limits): called with 1 per batch entry
# and with the entry count once per transaction; raises FHIRError (e.g. 429) for what is refused.
entry_gate: ContextVar[Callable[[int], None] | None] = ContextVar("entry_gate", default=None)

# Transaction processing order (R4 http.html#trules): deletes, creates, updates, then reads.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def process_bundle(service: FhirService, bundle: Any, base_url: str) -> dict[str, Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FHIRError.of(
            400,
            "invalid",
            "POST to the base URL takes a Bundle of type batch or transaction",
            expression=["resourceType"],
        )
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise FHIRError.of(
            400,
            "invalid",
            f"Bundle.type must be batch or transaction, not {kind!r}",
            expression=["Bundle.type"],
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FHIRError.of(400, "structure", "Bundle.entry must be an array", expression=["Bundle.entry"])
    gate = entry_gate.get()
    if kind == "transaction":
        if gate is not None:
            gate(len(entries))
        return _transaction(service, entries, base_url)
    return _batch(service, entries, base_url, gate)


def _request(entry: Any, index: int) -> tuple[str, str, str]:
    where = f"Bundle.entry[{index}].request"
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise FHIRError.of(400, "required", "Each entry needs a request", expression=[where])
    method = entry["request"].get("method")
    url = entry["request"].get("url")
    if not isinstance(method, str) or method not in _ORDER:  # a JSON array or object is unhashable
        raise FHIRError.of(
            400, "invalid", f"Unsupported request.method {method!r}", expression=[f"{where}.method"]
        )
    if not isinstance(url, str) or not url:
        raise FHIRError.of(400, "required", "request.url is required", expression=[f"{where}.url"])
    for name in ("ifMatch", "ifNoneExist", "ifNoneMatch", "ifModifiedSince"):  # the headers, as strings
        value = entry["request"].get(name)
        if value is not None and not isinstance(value, str):
            raise FHIRError.of(
                400,
                "invalid",
                f"request.{name} must be a string, not {value!r}",
                expression=[f"{where}.{name}"],
            )
    return method, url, where


def _split_url(url: str, base_url: str) -> tuple[list[str], str]:
    if base_url and url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    parts = urlsplit(url)
    return [p for p in parts.path.split("/") if p], parts.query


def _transaction(service: FhirService, entries: list, base_url: str) -> dict[str, Any]:
    # Pass 1: assign ids to creates so urn:uuid references can be rewritten everywhere.
    plan: list[tuple[int, str, list[str], str, Any, dict]] = []
    aliases: dict[str, str] = {}
    for index, entry in enumerate(entries):
        method, url, _ = _request(entry, index)
        path, query = _split_url(url, base_url)
        plan.append((index, method, path, query, entry.get("resource"), entry))
    writes: list[tuple[int, Write | None]] = []
    results: dict[int, dict[str, Any]] = {}
    found: dict[int, StoredVersion] = {}
    for index, method, path, _query, resource, entry in sorted(plan, key=lambda p: _ORDER[p[1]]):
        if method == "POST":
            if len(path) != 1:
                raise _entry_error(index, "POST in a transaction takes [type] as its url")
            service.check_type(path[0])
            condition = entry["request"].get("ifNoneExist")
            if condition:
                existing = service._conditional_match(path[0], condition, base_url)
                if existing is not None:
                    found[index] = existing
                    _alias(aliases, entry, f"{existing.type}/{existing.id}")
                    continue
            new_id = service.site.ids.new_id(path[0])
            _alias(aliases, entry, f"{path[0]}/{new_id}")
            writes.append((index, Write(path[0], new_id, resource, "POST")))
    # Pass 2: resolve references and validate every write; nothing is stored until all pass.
    ready: list[tuple[int, Write]] = []
    deleted: set[tuple[str, str]] = set()
    for index, write in writes:
        assert write is not None
        body = _rewrite(write.resource, aliases)
        try:
            service.prepare_create(write.type, body)
        except FHIRError as exc:
            raise _locate(exc, index) from None
        ready.append((index, Write(write.type, write.id, body, "POST")))
    for index, method, path, query, resource, entry in sorted(plan, key=lambda p: _ORDER[p[1]]):
        try:
            if method == "DELETE":
                target = _target(service, path, query, base_url, index)
                if target is not None and (path[0], target) not in deleted:
                    write = service.prepare_delete(path[0], target)
                    if write is not None:
                        ready.append((index, write))
                        deleted.add((path[0], target))
                results.setdefault(index, {"response": {"status": "204 No Content"}})
            elif method in ("PUT",):
                body = _rewrite(resource, aliases)
                if len(path) == 1 and query:
                    target = _target(service, path, query, base_url, index)
                    rid = (
                        target
                        or (body.get("id") if isinstance(body, dict) else None)
                        or service.site.ids.new_id(path[0])
                    )
                    if isinstance(body, dict):
                        body = {**body, "id": rid}
                    path = [path[0], rid]
                if len(path) != 2:
                    raise _entry_error(index, "PUT in a transaction takes [type]/[id] as its url")
                if_match = entry["request"].get("ifMatch")
                write, _creates = service.prepare_update(path[0], path[1], body, if_match)
                ready.append((index, write))
            elif method == "PATCH":
                raise _entry_error(index, "PATCH is not supported", status=405, code="not-supported")
        except FHIRError as exc:
            raise _locate(exc, index) from None
    versions = service.commit([w for _, w in ready]) if ready else []
    for (index, write), version in zip(ready, versions, strict=True):
        if write.method == "DELETE":
            results[index] = {"response": {"status": "200 OK"}}
        else:
            created = write.method == "POST" or version.version == 1
            results[index] = _versioned_entry(version, "201 Created" if created else "200 OK")
    for index, version in found.items():
        results[index] = _versioned_entry(version, "200 OK")
    # Reads run last and see the transaction's own writes.
    for index, method, path, query, _resource, _entry in plan:
        if method in ("GET", "HEAD"):
            results[index] = _read_entry(service, path, query, base_url)
    response = bundle_shell(service.site, "transaction-response")
    response["entry"] = [results[i] for i in range(len(entries))]
    return response


def _batch(
    service: FhirService, entries: list, base_url: str, gate: Callable[[int], None] | None = None
) -> dict[str, Any]:
    response = bundle_shell(service.site, "batch-response")
    out = []
    for index, entry in enumerate(entries):
        try:
            if gate is not None:
                gate(1)
            method, url, _ = _request(entry, index)
            path, query = _split_url(url, base_url)
            out.append(_batch_entry(service, method, path, query, entry, base_url))
        except FHIRError as exc:
            out.append({"response": {"status": _status_text(exc.status), "outcome": exc.outcome()}})
    response["entry"] = out
    return response


def _batch_entry(
    service: FhirService, method: str, path: list[str], query: str, entry: dict, base_url: str
) -> dict:
    resource = entry.get("resource")
    request = entry["request"]
    if method in ("GET", "HEAD"):
        return _read_entry(service, path, query, base_url)
    if method == "POST" and len(path) == 1:
        return _write_entry(service.create(path[0], resource, request.get("ifNoneExist"), base_url), base_url)
    if method == "PUT" and len(path) == 2:
        return _write_entry(service.update(path[0], path[1], resource, request.get("ifMatch")), base_url)
    if method == "PUT" and len(path) == 1 and query:
        return _write_entry(service.conditional_update(path[0], query, resource, base_url), base_url)
    if method == "DELETE" and len(path) == 2:
        return _write_entry(service.delete(path[0], path[1]), base_url)
    if method == "DELETE" and len(path) == 1 and query:
        return _write_entry(service.conditional_delete(path[0], query, base_url), base_url)
    raise FHIRError.of(400, "not-supported", f"Unsupported batch request {method} {'/'.join(path)}")


def _read_entry(service: FhirService, path: list[str], query: str, base_url: str) -> dict[str, Any]:
    try:
        items = parse_qsl(query, keep_blank_values=True)
        if len(path) == 1:
            resource = service.search(path[0], items, base_url)
        elif len(path) == 2:
            version = service.read(path[0], path[1])
            return _versioned_entry(version, "200 OK")
        elif len(path) == 4 and path[2] == "_history":
            version = service.vread(path[0], path[1], path[3])
            return _versioned_entry(version, "200 OK")
        elif len(path) == 3 and path[0] == "Patient" and path[2] == "$everything":
            resource = service.everything(path[1], base_url, items)
        else:
            raise FHIRError.of(400, "not-supported", f"Unsupported read url {'/'.join(path)}")
        return {"resource": resource, "response": {"status": "200 OK"}}
    except FHIRError as exc:
        return {"response": {"status": _status_text(exc.status), "outcome": exc.outcome()}}


def _write_entry(result: Result, base_url: str) -> dict[str, Any]:
    if result.version is not None and result.version.resource is not None:
        return _versioned_entry(result.version, _status_text(result.status))
    return {"response": {"status": _status_text(result.status)}}


def _versioned_entry(version: StoredVersion, status: str) -> dict[str, Any]:
    return {
        "resource": version.resource,
        "response": {
            "status": status,
            "location": f"{version.type}/{version.id}/_history/{version.version}",
            "etag": f'W/"{version.version}"',
            "lastModified": version.last_updated,
        },
    }


def _target(service: FhirService, path: list[str], query: str, base_url: str, index: int) -> str | None:
    if len(path) == 2:
        service.check_type(path[0])
        return path[1]
    if len(path) == 1 and query:
        ids = service.find(path[0], query, base_url)
        if len(ids) > 1:
            raise _entry_error(
                index, f"{len(ids)} resources match '{query}'", status=412, code="multiple-matches"
            )
        return ids[0] if ids else None
    raise _entry_error(index, "url must be [type]/[id] or [type]?[criteria]")


def _alias(aliases: dict[str, str], entry: dict, target: str) -> None:
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str) and full_url:
        aliases[full_url] = target


def _rewrite(value: Any, aliases: dict[str, str]) -> Any:
    """Replace references to other entries' fullUrls (urn:uuid:...) with the assigned Type/id."""
    if not aliases:
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in aliases:
                out[key] = aliases[item]
            else:
                out[key] = _rewrite(item, aliases)
        return out
    if isinstance(value, list):
        return [_rewrite(v, aliases) for v in value]
    return value


def _entry_error(index: int, text: str, status: int = 400, code: str = "invalid") -> FHIRError:
    return FHIRError.of(status, code, text, expression=[f"Bundle.entry[{index}]"])


def _locate(exc: FHIRError, index: int) -> FHIRError:
    """Prefix each issue's expression with the entry it came from, so the client can find it."""
    issues = [
        Issue(
            i.severity,
            i.code,
            f"Bundle.entry[{index}]: {i.diagnostics}",
            tuple(
                f"Bundle.entry[{index}].resource.{e.split('.', 1)[1]}" if "." in e else e
                for e in i.expression
            )
            or (f"Bundle.entry[{index}]",),
            i.details,
        )
        for i in exc.issues
    ]
    return FHIRError(exc.status, issues, exc.headers)


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
}


def _status_text(status: int) -> str:
    return f"{status} {_REASONS.get(status, '')}".strip()


__all__ = ["operation_outcome", "process_bundle"]
