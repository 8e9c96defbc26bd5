"""A card as an EHR shows it, in HTML for the preview page and the evidence pages' example cards
(both render ``view`` with the ``card`` macro of ``templates/_card.html``): its detail's Markdown
rendered to a safe subset. Everything is escaped first; then only paragraphs, bullet lists,
**bold**, *emphasis*, `code` and http(s) links are turned into tags, so no card text can inject
markup, scripts or other URL schemes."""

from __future__ import annotations

import html
import re
from typing import Any

from markupsafe import Markup

from ipt_cds.protocol.models import Card

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^\s)]+)\)")
_BULLET = re.compile(r"^\s*[-*]\s+")


def markdown(text: str) -> Markup:
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line for line in block.splitlines() if line.strip()]
        if lines and all(_BULLET.match(line) or line.startswith("  ") for line in lines):
            items: list[str] = []
            for line in lines:
                if _BULLET.match(line):
                    items.append(_inline(_BULLET.sub("", line)))
                elif items:
                    items[-1] += " " + _inline(line.strip())
            blocks.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
        elif lines:
            blocks.append("<p>" + " ".join(_inline(line.strip()) for line in lines) + "</p>")
    return Markup("\n".join(blocks))  # noqa: S704 - built from escaped text only


def _inline(text: str) -> str:
    out = html.escape(text, quote=True)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _LINK.sub(r'<a href="\2" rel="noopener noreferrer" target="_blank">\1</a>', out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _EM.sub(r"<em>\1</em>", out)


def view(rule: str, card: Card, source_url: str | None = None) -> dict[str, Any]:
    """What the ``card`` macro shows of a card: ``source_url`` links its source label."""
    return {
        "rule": rule,
        "uuid": card.uuid,
        "indicator": card.indicator,
        "summary": card.summary,
        "detail": markdown(card.detail or ""),
        "links": [link.model_dump() for link in card.links or []],
        "source": card.source.label,
        "source_url": source_url,
        "suggestions": [s.model_dump() for s in card.suggestions or []],
        "reasons": [r.model_dump() for r in card.overrideReasons or []],
    }
