"""The FHIR REST API of one site, as an ASGI app mounted at the site's base path.

Routing is by path segments (`[type]`, `[type]/[id]`, `[type]/[id]/_history/[vid]`, ...), so every
miss is answered with an OperationOutcome (404 unknown type, 405 wrong method) instead of a framework
page. Content negotiation: JSON only; XML asked for in Accept or _format gets 406, an XML body 415.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from simulator.clock import http_date
from simulator.fhir.bulk import BULK_PATH, MANIFEST, NDJSON, BulkExports, export_parameters
from simulator.fhir.capability import capability_statement
from simulator.fhir.errors import FHIRError
from simulator.fhir.jsonbody import dumps, parse_json
from simulator.fhir.paging import paging_style
from simulator.fhir.service import FhirService, Result, information_outcome
from simulator.fhir.transaction import process_bundle
from simulator.fhir.values import ascii_int
from simulator.site import Site
from simulator.store.base import StoredVersion

log = logging.getLogger("ehrsim.fhir")

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
_XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir")
_FORM = "application/x-www-form-urlencoded"


_FHIR_JSON_HEADER = (b"content-type", FHIR_JSON.encode("latin-1"))


class FhirResponse(Response):
    """A Response whose headers are built directly: ours are never repeated and already canonical,
    so starlette's general header merging (a measurable part of every write) is not needed."""

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        raw: list[tuple[bytes, bytes]] = []
        if self.body or not (self.status_code < 200 or self.status_code in (204, 304)):
            raw.append((b"content-length", str(len(self.body)).encode("latin-1")))
        if self.media_type is not None:
            raw.append(
                _FHIR_JSON_HEADER
                if self.media_type == FHIR_JSON
                else (b"content-type", self.media_type.encode("latin-1"))
            )
        if headers:
            raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self.raw_headers = raw


def fhir_response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    content = b"" if body is None else dumps(body)
    return FhirResponse(
        content, status_code=status, headers=headers, media_type=FHIR_JSON if body is not None else None
    )


def error_response(error: FHIRError) -> Response:
    return fhir_response(error.status, error.outcome(), error.headers)


def header(request: Request, name: str, default: str | None = "") -> str | None:
    """A request header by lower-case name (`default` when absent), from a dict made once per
    request (starlette's Headers scans the list on every get). A layer that rewrites the headers
    replaces `scope["headers"]`, so the dict is remade when the list is another one."""
    scope = request.scope
    raw = scope.get("headers", ())
    cached = scope.get("ehrsim.headers")
    if cached is None or cached[0] is not raw:
        cached = scope["ehrsim.headers"] = (raw, {k.decode("latin-1"): v.decode("latin-1") for k, v in raw})
    return cached[1].get(name, default)


def site_base_url(site: Site, request: Request) -> str:
    """The site's FHIR base as the client sees it (or the configured public base)."""
    if site.settings.public_base:
        return site.settings.public_base.rstrip("/")
    # From the scope, not request.url: building a URL object costs more than the rest of a read.
    scope = request.scope
    host = header(request, "host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{site.base_path}"


class FhirApi:
    """ASGI app: `scope["path"]` relative to the site's base path is dispatched to `FhirService`."""

    def __init__(self, site: Site, service: FhirService | None = None) -> None:
        self.site = site
        self.service = service or FhirService(site)
        self.exports = BulkExports(site, self.service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.handle(request)
        except FHIRError as error:
            response = error_response(error)
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception:  # a bug, not bad input: still answer in FHIR, and log it loudly
            log.exception("unhandled error for %s %s", request.method, scope.get("path"))
            response = error_response(
                FHIRError.of(500, "exception", "Internal error in ehrsim; see the server log")
            )
        await response(scope, receive, send)

    def base_url(self, request: Request) -> str:
        return site_base_url(self.site, request)

    async def handle(self, request: Request) -> Response:
        path = request.scope.get("ehrsim.subpath")
        if path is None:
            path = request.scope["path"][len(self.site.base_path) :]
        parts = [p for p in path.split("/") if p]
        method = request.method
        if parts and parts[0] == BULK_PATH:  # status and NDJSON files: no FHIR JSON negotiation
            return self._bulk(method, parts[1:], self.base_url(request))
        _negotiate(request)
        items = [
            (k, v)
            for k, v in parse_qsl(_query(request), keep_blank_values=True)
            if k not in ("_format", "_pretty")
        ]
        base = self.base_url(request)
        svc = self.service
        n = len(parts)

        if method == "GET":
            page = paging_style(self.site.settings.paging).parse(items)
            if page is not None:
                return fhir_response(200, svc.page(page.key, page.offset, page.count, base))
        if n == 0:
            if method == "POST":
                bundle = await self._body(request)
                return fhir_response(200, process_bundle(svc, bundle, base))
            if method == "GET":
                raise FHIRError.of(
                    400,
                    "not-supported",
                    "Search across all resource types is not supported; search a type, e.g. GET [base]/Patient",
                )
            raise _method_not_allowed(method, "[base]", ("GET", "POST"))
        head = parts[0]
        if n == 1 and head == "$export":
            return await self._export(request, "system", items, base, path)
        if n == 1 and head == "metadata":
            _only(method, ("GET",), "metadata")
            return fhir_response(200, capability_statement(self.site, base))
        if n == 1 and head == "_history":
            _only(method, ("GET",), "_history")
            return fhir_response(200, svc.history(base, items=items))
        if not head[:1].isupper():
            raise FHIRError.of(
                404, "not-found", f"'{head}' is not a resource type or endpoint of this server"
            )
        svc.check_type(head)
        if n == 1:
            if method == "GET":
                return fhir_response(200, svc.search(head, items, base, lenient=_lenient(request)))
            if method == "POST":
                resource = await self._body(request)
                result = svc.create(head, resource, header(request, "if-none-exist", None), base)
                return self._write_response(request, result, base)
            if method == "PUT" and items:
                resource = await self._body(request)
                return self._write_response(
                    request, svc.conditional_update(head, _query(request), resource, base), base
                )
            if method == "DELETE" and items:
                return self._delete_response(svc.conditional_delete(head, _query(request), base))
            raise _method_not_allowed(method, head, ("GET", "POST", "PUT", "DELETE"))
        second = parts[1]
        if n == 2 and second == "_search":
            _only(method, ("POST",), f"{head}/_search")
            form = await self._form(request)
            return fhir_response(200, svc.search(head, items + form, base, lenient=_lenient(request)))
        if n == 2 and second == "_history":
            _only(method, ("GET",), f"{head}/_history")
            return fhir_response(200, svc.history(base, head, items=items))
        if n == 2 and second == "$export" and head == "Patient":
            return await self._export(request, "Patient", items, base, path)
        if n == 2 and second.startswith("$"):
            raise FHIRError.of(400, "not-supported", f"Operation {second} is not supported on {head}")
        if n == 2:
            if method in ("GET", "HEAD"):
                version = svc.read(head, second)
                if _not_modified(request, version):
                    return Response(status_code=304, headers=_version_headers(version))
                return fhir_response(200, version.resource, _version_headers(version))
            if method == "PUT":
                resource = await self._body(request)
                return self._write_response(
                    request, svc.update(head, second, resource, header(request, "if-match", None)), base
                )
            if method == "DELETE":
                return self._delete_response(svc.delete(head, second))
            raise _method_not_allowed(method, f"{head}/[id]", ("GET", "PUT", "DELETE"))
        third = parts[2]
        if n == 3 and third == "_history":
            _only(method, ("GET",), f"{head}/[id]/_history")
            return fhir_response(200, svc.history(base, head, second, items=items))
        if n == 3 and third == "$everything" and head == "Patient":
            _only(method, ("GET", "POST"), "Patient/[id]/$everything")
            return fhir_response(200, svc.everything(second, base, items))
        if n == 3 and third == "$export" and head == "Group":
            return await self._export(request, "Group", items, base, path, group_id=second)
        if n == 3 and third.startswith("$"):
            raise FHIRError.of(400, "not-supported", f"Operation {third} is not supported on {head}")
        if n == 4 and third == "_history":
            _only(method, ("GET",), f"{head}/[id]/_history/[vid]")
            version = svc.vread(head, second, parts[3])
            return fhir_response(200, version.resource, _version_headers(version))
        raise FHIRError.of(404, "not-found", f"No FHIR endpoint at '{path}'")

    async def _export(
        self,
        request: Request,
        level: str,
        items: list[tuple[str, str]],
        base: str,
        path: str,
        group_id: str | None = None,
    ) -> Response:
        _only(request.method, ("GET", "POST"), path.strip("/"))
        query = _query(request)
        patients = None
        if request.method == "POST":  # the parameters come as a Parameters resource
            if items:
                raise FHIRError.of(
                    400, "invalid", "A POST $export takes its parameters in the Parameters body, not the URL"
                )
            items, patients = export_parameters(await self._body(request), level)
        job = self.exports.kick_off(
            level,
            items,
            f"{base}/{path.strip('/')}" + (f"?{query}" if query else ""),
            header(request, "prefer") or "",
            header(request, "accept") or "",
            group_id,
            patients,
            base_url=base,
            lenient=_lenient(request),
        )
        status_url = f"{base}/{BULK_PATH}/{job.id}"
        outcome = information_outcome(f"Bulk export {job.id} accepted; poll {status_url}")
        return fhir_response(202, outcome, {"Content-Location": status_url})

    def _bulk(self, method: str, parts: list[str], base: str) -> Response:
        """A bulk export's status URL (GET, DELETE) or one of its files (GET)."""
        exports = self.exports
        if len(parts) == 1:
            _only(method, ("GET", "DELETE"), "a bulk export status URL")
            if method == "DELETE":
                exports.cancel(parts[0])
                return fhir_response(202, information_outcome(f"Bulk export {parts[0]} deleted"))
            job = exports.job(parts[0])
            progress = exports.progress(job)
            if progress is not None:
                return Response(status_code=202, headers=progress)
            return FhirResponse(
                dumps(exports.manifest(job, base)),
                status_code=200,
                media_type=MANIFEST,
                headers={"Expires": exports.expires(job)},
            )
        if len(parts) == 2:
            _only(method, ("GET",), "a bulk export file")
            body = exports.file(parts[0], parts[1])
            expires = exports.expires(exports.jobs[parts[0]])
            return FhirResponse(body, status_code=200, media_type=NDJSON, headers={"Expires": expires})
        raise FHIRError.of(404, "not-found", f"No bulk export endpoint at '{BULK_PATH}/{'/'.join(parts)}'")

    async def _body(self, request: Request) -> Any:
        content_type = header(request, "content-type").split(";")[0].strip().lower()
        if content_type in _XML_TYPES:
            raise FHIRError.of(
                415, "not-supported", "XML is not supported by ehrsim; send application/fhir+json"
            )
        if content_type and content_type not in _JSON_TYPES:
            raise FHIRError.of(
                415,
                "not-supported",
                f"Content-Type '{content_type}' is not supported; send application/fhir+json",
            )
        return parse_json(await self._read_limited(request))

    async def _form(self, request: Request) -> list[tuple[str, str]]:
        content_type = header(request, "content-type").split(";")[0].strip().lower()
        body = await self._read_limited(request)
        if not body:
            return []
        if content_type != _FORM:
            raise FHIRError.of(
                415, "not-supported", f"POST _search takes {_FORM}, not '{content_type or 'no type'}'"
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FHIRError.of(400, "structure", "The form body is not valid UTF-8") from None
        return parse_qsl(text, keep_blank_values=True)

    async def _read_limited(self, request: Request) -> bytes:
        limit = self.site.settings.max_body_bytes
        declared = header(request, "content-length")
        if declared and (ascii_int(declared) or 0) > limit:
            raise FHIRError.of(413, "too-costly", f"The request body is over the {limit}-byte limit")
        # The ASGI receive loop itself: Request.stream() adds an async generator per request.
        chunks, size = [], 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise FHIRError.of(413, "too-costly", f"The request body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _write_response(self, request: Request, result: Result, base: str) -> Response:
        version = result.version
        assert version is not None
        headers = _version_headers(version)
        if result.status == 201:
            headers["Location"] = f"{base}/{version.type}/{version.id}/_history/{version.version}"
        prefer = _prefer(request, "return")
        if prefer == "minimal":
            return Response(status_code=result.status, headers=headers)
        if prefer == "OperationOutcome":
            verb = "Created" if result.status == 201 else "Updated" if result.status == 200 else "Found"
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "information",
                        "code": "informational",
                        "diagnostics": f"{verb} {version.type}/{version.id} version {version.version}",
                    }
                ],
            }
            return fhir_response(result.status, outcome, headers)
        return fhir_response(result.status, version.resource, headers)

    @staticmethod
    def _delete_response(result: Result) -> Response:
        if result.outcome is None:
            return Response(status_code=204)
        return fhir_response(result.status, result.outcome)


def _version_headers(version: StoredVersion) -> dict[str, str]:
    return {
        "ETag": f'W/"{version.version}"',
        "Last-Modified": http_date(datetime.fromtimestamp(version.timestamp, UTC)),
    }


def _not_modified(request: Request, version: StoredVersion) -> bool:
    tag = header(request, "if-none-match", None)
    return tag is not None and tag.strip() in (f'W/"{version.version}"', f'"{version.version}"')


def _negotiate(request: Request) -> None:
    fmt = (
        next((v for k, v in parse_qsl(_query(request)) if k == "_format"), None)
        if b"_format" in request.scope.get("query_string", b"")
        else None
    )
    if fmt is not None:
        wanted = fmt.lower()
        if "xml" in wanted:
            raise FHIRError.of(406, "not-supported", "XML is not supported by ehrsim; use _format=json")
        if wanted not in ("json", *_JSON_TYPES):
            raise FHIRError.of(406, "not-supported", f"_format '{fmt}' is not supported; use _format=json")
        return
    accept = header(request, "accept")
    if not accept:
        return
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if any(k in _JSON_TYPES or k in ("*/*", "application/*") for k in kinds):
        return
    if any(k in _XML_TYPES for k in kinds):
        raise FHIRError.of(
            406, "not-supported", "XML is not supported by ehrsim; accept application/fhir+json"
        )
    if all(k.startswith("text/html") or k.startswith("text/") for k in kinds):
        return  # a browser: JSON is the best we have
    raise FHIRError.of(
        406, "not-supported", f"Cannot produce '{accept}'; ehrsim answers application/fhir+json"
    )


def _query(request: Request) -> str:
    return request.scope.get("query_string", b"").decode("latin-1")


def _prefer(request: Request, key: str) -> str | None:
    for part in header(request, "prefer").replace(",", ";").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip() == key:
            return value.strip().strip('"')
    return None


def _lenient(request: Request) -> bool:
    return _prefer(request, "handling") == "lenient"


def _only(method: str, allowed: tuple[str, ...], where: str) -> None:
    if method not in allowed:
        raise _method_not_allowed(method, where, allowed)


def _method_not_allowed(method: str, where: str, allowed: tuple[str, ...]) -> FHIRError:
    return FHIRError.of(
        405,
        "not-supported",
        f"{method} is not allowed on {where}; allowed: {', '.join(allowed)}",
        headers={"Allow": ", ".join(allowed)},
    )
