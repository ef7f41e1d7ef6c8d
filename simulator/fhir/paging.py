"""Page links: how a searchset's `next`/`previous` URLs look and how a page request is recognised.

FHIR leaves page links opaque to clients, and vendors differ: HAPI-style `[base]?_getpages=...`,
Epic's `[base]/Observation?sessionID=...` (the query is not repeated), Oracle Health's original
query plus `-pageContext=...&-pageDirection=NEXT`, MEDITECH's original query plus `&continue=...`.
A site picks a style by name (`SiteSettings.paging`); every style resolves to the same frozen
search snapshot (`Site.snapshots`), so paging stays stable while data changes.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from simulator.fhir.bundles import SearchSnapshot, page_link, self_link
from simulator.fhir.errors import FHIRError
from simulator.fhir.values import ascii_int


@dataclass(frozen=True, slots=True)
class PageRequest:
    key: str  # the snapshot key
    offset: int
    count: int | None


class PagingStyle(Protocol):
    relations: tuple[str, ...]  # the link relations this style emits

    def link(
        self, base_url: str, snapshot: SearchSnapshot, key: str, offset: int, count: int, relation: str
    ) -> str:
        """The URL of the page at `offset`, for the link `relation` (self, next, previous...)."""
        ...

    def parse(self, items: list[tuple[str, str]]) -> PageRequest | None:
        """The page a request asks for, or None when it is not a page request."""
        ...


def _bad_token(name: str) -> FHIRError:
    return FHIRError.of(400, "invalid", f"The paging parameter '{name}' is not one this server issued")


def _pack(key: str, offset: int, count: int) -> str:
    """32 hex digits: the snapshot key (16), then offset and count (8 each)."""
    return f"{key}{offset:08X}{count:08X}".upper()


def _unpack(text: str, name: str) -> PageRequest:
    if len(text) != 32:
        raise _bad_token(name)
    try:
        return PageRequest(text[:16].lower(), int(text[16:24], 16), int(text[24:], 16))
    except ValueError:
        raise _bad_token(name) from None


class GetPages:
    """`[base]?_getpages=KEY&_getpagesoffset=N&_count=C` (HAPI's style; ehrsim's default)."""

    relations = ("self", "first", "previous", "next", "last")

    def link(
        self, base_url: str, snapshot: SearchSnapshot, key: str, offset: int, count: int, relation: str
    ) -> str:
        return page_link(base_url, key, offset, count, snapshot.bundle_type)

    def parse(self, items: list[tuple[str, str]]) -> PageRequest | None:
        params = dict(items)
        if "_getpages" not in params:
            return None
        offset = ascii_int(params.get("_getpagesoffset", "0"))
        count = params.get("_count")
        page_size = ascii_int(count) if count is not None else None
        if offset is None or (count is not None and page_size is None):
            raise FHIRError.of(400, "invalid", "_getpagesoffset and _count must be non-negative integers")
        return PageRequest(params["_getpages"], offset, page_size)


class SessionId:
    """Epic: `[base]/Observation?sessionID=<page>-<token>`; the original query is not repeated."""

    relations = ("self", "next")
    param = "sessionID"

    def link(
        self, base_url: str, snapshot: SearchSnapshot, key: str, offset: int, count: int, relation: str
    ) -> str:
        page = offset // count + 1 if count else 1
        url = f"{base_url}/{snapshot.self_path}" if snapshot.self_path else base_url
        return f"{url}?{urlencode({self.param: f'{page}-{_pack(key, offset, count)}'})}"

    def parse(self, items: list[tuple[str, str]]) -> PageRequest | None:
        value = dict(items).get(self.param)
        if value is None:
            return None
        return _unpack(value.partition("-")[2], self.param)


class PageContext:
    """Oracle Health: the original query plus `-pageContext=<opaque>&-pageDirection=NEXT|PREVIOUS`."""

    relations = ("self", "previous", "next")
    param = "-pageContext"

    def link(
        self, base_url: str, snapshot: SearchSnapshot, key: str, offset: int, count: int, relation: str
    ) -> str:
        token = base64.urlsafe_b64encode(zlib.compress(f"{key}:{offset}:{count}".encode())).decode()
        base = self_link(base_url, snapshot.self_path, snapshot.self_params)
        # The direction is informational (the context names the page), but it reads right in the URL.
        direction = "PREVIOUS" if relation == "previous" else "NEXT"
        joiner = "&" if "?" in base else "?"
        return f"{base}{joiner}{urlencode({self.param: token, '-pageDirection': direction})}"

    def parse(self, items: list[tuple[str, str]]) -> PageRequest | None:
        value = dict(items).get(self.param)
        if value is None:
            return None
        try:
            key, offset, count = zlib.decompress(base64.urlsafe_b64decode(value.encode())).decode().split(":")
            return PageRequest(key, int(offset), int(count))
        except (ValueError, binascii.Error, zlib.error, UnicodeDecodeError):
            raise _bad_token(self.param) from None


class ContinueCursor:
    """MEDITECH: the original query plus `&continue=<cursor>`; the cursor looks like the next
    page's first id (category prefix and an upper-case UUID)."""

    relations = ("self", "next")
    param = "continue"

    def link(
        self, base_url: str, snapshot: SearchSnapshot, key: str, offset: int, count: int, relation: str
    ) -> str:
        packed = _pack(key, offset, count)
        cursor = f"{packed[:8]}-{packed[8:12]}-{packed[12:16]}-{packed[16:20]}-{packed[20:]}"
        refs = snapshot.refs
        if offset < len(refs) and "." in refs[offset][1]:
            cursor = refs[offset][1].split(".", 1)[0] + "." + cursor
        base = self_link(base_url, snapshot.self_path, snapshot.self_params)
        joiner = "&" if "?" in base else "?"
        return f"{base}{joiner}{urlencode({self.param: cursor})}"

    def parse(self, items: list[tuple[str, str]]) -> PageRequest | None:
        value = dict(items).get(self.param)
        if value is None:
            return None
        return _unpack(value.rsplit(".", 1)[-1].replace("-", ""), self.param)


PAGING_STYLES: dict[str, PagingStyle] = {
    "getpages": GetPages(),
    "session-id": SessionId(),
    "page-context": PageContext(),
    "continue": ContinueCursor(),
}


_PAGE_PARAMETERS = frozenset(("_getpages", SessionId.param, PageContext.param, ContinueCursor.param))


def is_page_query(query: str) -> bool:
    """Whether a query string asks for a page of an earlier search, in any style (for the journal)."""
    return any(name in _PAGE_PARAMETERS for name, _ in parse_qsl(query, keep_blank_values=True))


def paging_style(name: str) -> PagingStyle:
    try:
        return PAGING_STYLES[name]
    except KeyError:
        raise ValueError(f"unknown paging style '{name}' (known: {', '.join(PAGING_STYLES)})") from None
