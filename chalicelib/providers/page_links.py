"""Next-page links from an upstream: kept on the provider's origin, and read from a ``Link`` header.

Every upstream is hostile: a next-page URL must stay on the provider's origin (same scheme,
host and port, no userinfo) and under ``base_url``'s path prefix, without dot segments, or
the page fails. ``PaginationError`` messages name the pagination kind and what was wrong,
never the URL (a URL may carry a signature or a cursor).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

from chalicelib.providers.http import HEADER_NAME
from chalicelib.providers.pagination_kinds import PaginationError

# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class UrlScope:
    """Where a provider's calls may go: its origin and ``base_url``'s path prefix."""

    origin: str
    """``scheme://host[:port]``, scheme and host lower-cased."""
    base_path: str
    """``base_url``'s path without a trailing slash (``""`` when it has none)."""

    @classmethod
    def of(cls, base_url: str) -> UrlScope:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return cls(origin=f"{parts.scheme.lower()}://{host}{port}", base_path=parts.path.rstrip("/"))


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x20\x7f]")


def confine_url(reference: str, scope: UrlScope, *, base: str, kind: str) -> str:
    """Resolve a next-page URL against ``base`` and return its path-and-query from the host.

    Raises ``PaginationError`` (naming ``kind``, never the URL) unless it stays on the
    provider's origin and under ``base_url``'s path prefix. The fragment is dropped.
    """
    reference = reference.strip()
    leaves = PaginationError(f"pagination {kind}: the next page's URL leaves the provider's origin")
    if _CONTROL_CHARACTERS.search(reference) or "\\" in reference:
        raise PaginationError(f"pagination {kind}: the next page's URL has characters a URL cannot have")
    parts = urlsplit(urljoin(base, reference))
    allowed = urlsplit(scope.origin)
    if parts.scheme.lower() != allowed.scheme or "@" in parts.netloc:
        raise leaves
    if (parts.hostname or "") != (allowed.hostname or ""):
        raise leaves
    try:
        port = parts.port
    except ValueError:
        raise leaves from None
    default_port = _DEFAULT_PORTS.get(allowed.scheme)
    if (port or default_port) != (allowed.port or default_port):
        raise leaves

    path = parts.path or "/"
    decoded = unquote(path)
    outside = PaginationError(f"pagination {kind}: the next page's URL is outside base_url's path")
    if any(segment in (".", "..") for segment in decoded.split("/")) or "\\" in decoded:
        raise outside
    for candidate in (path, decoded):
        if scope.base_path and candidate != scope.base_path and not candidate.startswith(scope.base_path + "/"):
            raise outside
    return path + (f"?{parts.query}" if parts.query else "")


def split_target(target: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A path-and-query as its path and its query parameters, in order (blank values kept)."""
    path, _, query = target.partition("?")
    return path, tuple(parse_qsl(query, keep_blank_values=True))


# --------------------------------------------------------------------------- Link header (RFC 8288)


@dataclass(frozen=True)
class Link:
    target: str
    params: Mapping[str, str]
    """Parameter names lower-cased; the first occurrence of a name wins (RFC 8288, 3.3)."""

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(self.params.get("rel", "").lower().split())


def parse_link_header(value: str) -> list[Link]:
    """Every link of a ``Link`` header (several headers arrive joined by commas).

    Commas inside ``<...>`` and inside quoted parameter values are part of them.
    ``PaginationError`` when the header does not follow the RFC 8288 grammar.
    """
    malformed = PaginationError("pagination link_header: the Link header is malformed")
    links: list[Link] = []
    length = len(value)
    index = 0

    def skip_space(at: int) -> int:
        while at < length and value[at] in " \t":
            at += 1
        return at

    while True:
        while index < length and value[index] in " \t,":
            index += 1
        if index >= length:
            return links
        if value[index] != "<":
            raise malformed
        close = value.find(">", index + 1)
        if close < 0:
            raise malformed
        target = value[index + 1 : close].strip()
        index = close + 1
        params: dict[str, str] = {}
        while True:
            index = skip_space(index)
            if index >= length or value[index] != ";":
                break
            index = skip_space(index + 1)
            name_match = HEADER_NAME.match(value, index)
            if name_match is None:
                if index < length and value[index] in ";,":
                    continue  # an empty parameter ("<x>; ; rel=next") carries nothing
                raise malformed
            name = name_match.group().lower()
            index = skip_space(name_match.end())
            param_value = ""
            if index < length and value[index] == "=":
                index = skip_space(index + 1)
                if index < length and value[index] == '"':
                    param_value, index = _quoted_string(value, index + 1, malformed)
                else:
                    token_match = HEADER_NAME.match(value, index)
                    if token_match is None:
                        raise malformed
                    param_value = token_match.group()
                    index = token_match.end()
            params.setdefault(name, param_value)
        index = skip_space(index)
        if index < length and value[index] != ",":
            raise malformed
        links.append(Link(target=target, params=params))


def _quoted_string(value: str, index: int, malformed: PaginationError) -> tuple[str, int]:
    """The content of a quoted string starting after its opening quote, and the index after its closing one."""
    text: list[str] = []
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            text.append(value[index + 1])
            index += 2
        elif char == '"':
            return "".join(text), index + 1
        else:
            text.append(char)
            index += 1
    raise malformed


def next_link(value: str) -> str | None:
    """The target of the first ``rel="next"`` link (``rel`` may list several relations)."""
    for link in parse_link_header(value):
        if "next" in link.relations:
            return link.target or None
    return None
