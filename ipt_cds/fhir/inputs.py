"""What the request brings for the fetch (its fhirServer and its token), and where a server's
answers may send the client next (``next`` links, never to another origin)."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

import httpx

from ipt_cds.protocol.errors import PrefetchUnavailable
from ipt_cds.protocol.models import Resource

log = logging.getLogger("ipt_cds")

# What an RFC 6750 bearer token may contain, give or take: printable ASCII without spaces. A
# token outside it cannot be put in a header (httpx would raise) and is refused unsent.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def origin(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


# --- the request's own inputs ----------------------------------------------------------


def authorization(token: str | None) -> dict[str, str]:
    if not token:
        return {}
    if not _TOKEN.fullmatch(token):
        log.warning("fhir fetch: the access token is not printable ASCII; nothing sent")
        raise PrefetchUnavailable(
            "The fhirAuthorization access_token cannot be sent in an HTTP header: a bearer "
            "token is printable ASCII without spaces.",
            code="fhir_unauthorized",
        )
    return {"Authorization": f"Bearer {token}"}


def checked_base(base: str) -> str:
    """fhirServer without its trailing slash, if it is an http(s) URL httpx can request."""
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 - raises on a port that is not a number
        httpx.URL(base)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except (ValueError, httpx.InvalidURL):
        usable = False
    if not usable:
        log.warning("fhir fetch: fhirServer is not a usable URL; nothing sent")
        raise PrefetchUnavailable(
            f"The fhirServer {base[:200]!r} is not an http(s) URL this service can contact.",
            code="fhir_server_not_allowed",
        )
    return base.rstrip("/")


# --- paging --------------------------------------------------------------------------------


def next_link(page: Resource, base: str) -> str | None:
    links = page.get("link") if page.get("resourceType") == "Bundle" else None
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and _same_origin(url, base):
                return url
            log.warning("fhir next link to another origin not followed")
            return None
    return None


def _same_origin(url: str, base: str) -> bool:
    try:
        a, b = urlsplit(url), urlsplit(base)
    except ValueError:
        return False
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)
