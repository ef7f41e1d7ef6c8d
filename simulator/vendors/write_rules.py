"""Vendor write rules: fields a create must carry, If-Match on update, the create response's shape.

`quirks.writes.required_fields[Type]` lists rules `{path, equals | one_of, message}` over dotted
paths (lists are searched element-wise: `category.coding.code` holds if any coding has the code).
A create that breaks one is refused with the vendor's issue; `update_requires_if_match` refuses a
PUT without If-Match; `create_response: minimal` answers 201 with an empty body, `Location` and
`ETag` (Oracle Health), by asking the core for `Prefer: return=minimal`.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.site import Site
from simulator.vendors.asgi import note_rule, path_parts, read_body, replay, request_header, respond_json
from simulator.vendors.outcomes import operation_outcome, render_issue
from simulator.vendors.quirks import quirks_of
from simulator.vendors.rules import broken_rules


class WriteRules:
    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writes = quirks_of(self.site).get("writes") or {}
        parts = path_parts(scope)
        method = scope["method"]
        if not writes or not parts:
            await self.app(scope, receive, send)
            return
        outcome = quirks_of(self.site).get("outcome") or {}
        if (
            method == "PUT"
            and len(parts) == 2
            and writes.get("update_requires_if_match")
            and request_header(scope, b"if-match") is None
        ):
            rule = writes["update_requires_if_match"]
            issue = render_issue(rule["issue"], outcome, type=parts[0])
            note_rule(scope, "update-requires-if-match")
            await respond_json(send, int(rule.get("status", 412)), operation_outcome([issue]))
            return
        if method == "POST" and len(parts) == 1:
            required = (writes.get("required_fields") or {}).get(parts[0])
            if required:
                body, within = await read_body(receive, self.site.settings.max_body_bytes)
                receive = replay(body)
                try:
                    resource = orjson.loads(body) if within else None
                except orjson.JSONDecodeError:
                    resource = None  # the core answers malformed JSON precisely
                if isinstance(resource, dict):
                    broken = broken_rules(resource, required["rules"])
                    if broken:
                        issues = [
                            render_issue(required["issue"], outcome, missing=m, type=parts[0]) for m in broken
                        ]
                        note_rule(scope, "required-fields")
                        await respond_json(send, int(required.get("status", 400)), operation_outcome(issues))
                        return
            if writes.get("create_response") == "minimal":
                scope = dict(scope)
                headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"prefer"]
                scope["headers"] = [*headers, (b"prefer", b"return=minimal")]
        await self.app(scope, receive, send)
