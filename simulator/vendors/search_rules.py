"""Vendor search rules: unknown parameters, required parameters, and the searchset's shape.

Before the search: parameters the vendor does not know are dropped (and reported) or left for the
core to reject; a search without one of the vendor's required parameter sets is refused with the
vendor's exact issues. After it: outcome entries (Epic's 4101 "no results", 59204 "suppressed"),
`total` kept, dropped or set to the page size, per-entry self links, the self link's parameter
order, and the vendor's answer when a search matches more than it will return.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.fhir.errors import FHIRError
from simulator.fhir.paging import paging_style
from simulator.fhir.searchparams import RESULT_PARAMETERS
from simulator.site import Site
from simulator.vendors.asgi import (
    capture,
    note_rule,
    path_parts,
    query_items,
    read_body,
    replay,
    request_header,
    respond,
    respond_json,
)
from simulator.vendors.outcomes import operation_outcome, render_issue
from simulator.vendors.quirks import quirks_of
from simulator.vendors.rules import holds

_ALWAYS_KNOWN = RESULT_PARAMETERS | {"_format", "_pretty"}


class SearchRules:
    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        quirks = quirks_of(self.site)
        parts = path_parts(scope)
        method = scope["method"]
        is_get = method == "GET" and len(parts) == 1
        is_post = method == "POST" and len(parts) == 2 and parts[1] == "_search"
        if not quirks or not (is_get or is_post) or not self.site.supports(parts[0]):
            await self.app(scope, receive, send)
            return
        rtype = parts[0]
        items = query_items(scope)
        form: list[tuple[str, str]] = []
        if is_post:  # the same rules for POST [type]/_search: its form body joins the query
            body, within = await read_body(receive, self.site.settings.max_body_bytes)
            receive = replay(body)
            text = _form_text(scope, body) if within else None
            if text is None:
                await self.app(scope, receive, send)  # the FHIR API answers these precisely
                return
            form = parse_qsl(text, keep_blank_values=True)
        try:
            is_page = is_get and paging_style(self.site.settings.paging).parse(items) is not None
        except FHIRError:
            is_page = True  # a malformed page token: the FHIR API answers it precisely
        if is_page:
            await self._shape(scope, receive, send, rtype, [], [], quirks)
            return
        outcome = quirks.get("outcome") or {}
        unknown = [name for name, _ in items + form if not self._known(rtype, name, quirks)]
        notes: list[dict[str, Any]] = []
        rule = quirks.get("unknown_parameters") or {}
        if unknown and rule.get("action", "reject") == "ignore":
            items = [(n, v) for n, v in items if n not in unknown]
            form = [(n, v) for n, v in form if n not in unknown]
            template = rule.get("issue")
            if template:
                notes = [render_issue(template, outcome, name=n, type=rtype) for n in dict.fromkeys(unknown)]
            scope = dict(scope)
            scope["query_string"] = urlencode(items).encode()
            if is_post:
                receive = replay(urlencode(form).encode())
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        required = self._required_rule(rtype, quirks)
        if required and not _satisfied(required, [n for n, _ in items + form]):
            issue = render_issue(required["issue"], outcome, type=rtype)
            note_rule(scope, "required-parameters")
            await respond_json(send, int(required.get("status", 400)), operation_outcome([*notes, issue]))
            return
        await self._shape(scope, receive, send, rtype, items + form, notes, quirks)

    def _known(self, rtype: str, name: str, quirks: dict[str, Any]) -> bool:
        base = name.split(":")[0].split(".")[0]
        if base in _ALWAYS_KNOWN or name.startswith("_has:"):
            return True
        declared = (quirks.get("search_parameters") or {}).get(rtype)
        if declared is not None:
            return base in declared
        return self.site.registry.get(rtype, base) is not None

    @staticmethod
    def _required_rule(rtype: str, quirks: dict[str, Any]) -> dict[str, Any] | None:
        rules = quirks.get("required_parameters") or {}
        rule = rules.get(rtype)
        if rule is None and "*" in rules and rtype not in (rules["*"].get("except") or []):
            rule = rules["*"]
        return rule

    async def _shape(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rtype: str,
        items: list[tuple[str, str]],
        notes: list[dict[str, Any]],
        quirks: dict[str, Any],
    ) -> None:
        answer = await capture(self.app, scope, receive)
        bundle = answer.json() if answer.status == 200 else None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            await respond(send, answer.status, answer.body, None, answer.headers)
            return
        rules = quirks.get("search_bundle") or {}
        outcome = quirks.get("outcome") or {}
        too_many = quirks.get("max_matches")
        if (
            too_many
            and rtype in too_many.get("types", [rtype])
            and bundle.get("total", 0) > int(too_many["limit"])
        ):
            issue = render_issue(too_many["issue"], outcome, type=rtype, limit=too_many["limit"])
            note_rule(scope, "max-matches")
            await respond_json(send, int(too_many.get("status", 422)), operation_outcome([issue]))
            return
        entries = bundle.get("entry", [])
        matches = [e for e in entries if (e.get("search") or {}).get("mode") != "outcome"]
        hidden = [r for r in rules.get("exclude") or [] if r.get("type", rtype) == rtype]
        if hidden:  # e.g. Oracle's combined patients: readable, never found by a search
            kept = [e for e in matches if not any(holds(e.get("resource"), r) for r in hidden)]
            if "total" in bundle:
                bundle["total"] -= len(matches) - len(kept)
            matches = kept
        issues = list(notes)
        if items:  # a new search (not a page request): the vendor's standing notes
            params = {n.split(":")[0] for n, _ in items}
            values = dict(items)
            for extra in rules.get("outcome_issues") or []:
                when = extra.get("when") or {}
                if when.get("type", rtype) != rtype:
                    continue
                wanted = when.get("params") or {}
                if all(k in params and values.get(k) == v for k, v in wanted.items()):
                    issues.append(
                        render_issue(extra["issue"], outcome, type=rtype, subtype=extra.get("subtype"))
                    )
        counting = dict(items).get("_summary") == "count"
        empty = bundle.get("total") == 0 if "total" in bundle else not matches
        if items and empty and rules.get("empty_outcome"):
            issues.append(render_issue(rules["empty_outcome"]["issue"], outcome, type=rtype))
        if rules.get("entry_self_link"):
            for entry in matches:
                if entry.get("fullUrl"):
                    entry["link"] = [{"relation": "self", "url": entry["fullUrl"]}]
        entries = list(matches)
        if issues:
            entries.append(
                {
                    # Derived from the bundle's id (itself seeded): same requests, same bytes.
                    "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, str(bundle.get('id')))}",
                    "resource": operation_outcome(issues),
                    "search": {"mode": "outcome"},
                }
            )
        if entries:
            bundle["entry"] = entries
        else:
            bundle.pop("entry", None)
        total = rules.get("total", "accurate")
        if total == "omit":
            bundle.pop("total", None)
        elif total == "page" and not counting:
            bundle["total"] = len(matches)
        if rules.get("self_link_params") == "sorted":
            for link in bundle.get("link", []):
                if link["relation"] == "self":
                    link["url"] = _sorted_query(link["url"])
        if rules.get("bundle_id") is False:
            bundle.pop("id", None)
            bundle.pop("meta", None)
        await respond(send, 200, orjson.dumps(bundle), _content_type(answer), answer.headers)


def _form_text(scope: Scope, body: bytes) -> str | None:
    """A POST _search body as text, or None when it is not a form the FHIR API would accept."""
    kind = (request_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
    if body and kind != b"application/x-www-form-urlencoded":
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _satisfied(rule: dict[str, Any], names: list[str]) -> bool:
    present = {n.split(":")[0].split(".")[0] for n in names}
    return any(set(option) <= present for option in rule.get("any_of", []))


def _sorted_query(url: str) -> str:
    parts = urlsplit(url)
    items = sorted(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(query=urlencode(items, safe=":|,/$*")))


def _content_type(answer: Any) -> str:
    value = answer.header(b"content-type")
    return value.decode() if value else "application/fhir+json; charset=utf-8"
