"""What a site profile changes, in words: one start-up log line, the lines ``ipt-cds site
check`` and the replay report list, and the WARNING every start gives while a safety rule is
off. A profile holds settings only (names, links, codes), never patient data."""

from __future__ import annotations

import logging
from pathlib import Path

from ipt_cds.knowledge.site import (
    DEFAULT_REPEAT_WINDOW_HOURS,
    DEFAULT_SITE,
    SiteProfile,
    words,
)

log = logging.getLogger("ipt_cds")


def effects(site: SiteProfile) -> list[str]:
    """One line per thing the profile changes from the defaults; none for the defaults."""
    lines = []
    if site.organization:
        lines.append(f"organization {site.organization!r} at the start of every card's source")
    if site.ehr != "generic":
        lines.append(f"cards shaped for {site.ehr} (docs/site-profile.md)")
    if site.repeat_window_hours != DEFAULT_REPEAT_WINDOW_HOURS:
        hours = f"{site.repeat_window_hours:g}"
        lines.append(
            "once per visit off: a card may repeat at every call"
            if site.repeat_window_hours == 0
            else f"once per visit: a card is held back for {hours} hours after it was shown"
        )
    if site.links:
        lines.append(f"links of the site: {', '.join(sorted(site.links))}")
    if site.orderables:
        lines.append(f"local order codes for: {', '.join(sorted(site.orderables))}")
    for rid, control in sorted(site.rules.items()):
        if control.enabled and not control.silent and control.snooze_days is None:
            continue  # named, at the defaults
        lines.append(f"rule {rid}: {words(control)}")
    return lines


def summary(site: SiteProfile, path: Path | None) -> str:
    """The start-up log line: which profile, and what it changes, in one line."""
    if path is None and site == DEFAULT_SITE:
        return "site profile: none (IPT_CDS_SITE_FILE unset): every rule shown, our links"
    source = str(path) if path is not None else "given in code"
    changes = effects(site)
    return f"site profile {source}: " + ("; ".join(changes) if changes else "the defaults")


def log_site(site: SiteProfile, path: Path | None) -> None:
    """At every start: the summary (INFO) and, while the profile keeps a safety rule's card
    away, a WARNING saying which and that the profile acknowledged it."""
    rules = sorted(site.rules)
    log.info(summary(site, path), extra={"event": "site-profile", "rules": rules})
    off = site.safety_rules_off()
    if off:
        named = ", ".join(
            f"{rid} {how} ({_GUARDS.get(rid, 'a safety card')})" for rid, how in off.items()
        )
        log.warning(
            "SAFETY RULES OFF by the site profile (acknowledge_safety_rules_off: true): %s. "
            "Clinicians are not shown these cards",
            named,
            extra={"event": "site-safety-rules-off", "rules": sorted(off)},
        )


# What each safety rule's card warns of, for the start-up WARNING.
_GUARDS = {
    "ipt-suicide-risk": "its card: a suicide risk on record",
    "ipt-psychosis": "its card: psychotic features on record",
}
