"""``ipt-cds site check FILE``: a site profile checked without starting the service."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.errors import KnowledgeError
from ipt_cds.knowledge.site import check_site
from ipt_cds.knowledge.site_summary import effects
from ipt_cds.ops.config import Settings

EXIT_PROBLEMS = 2


def check(path: Path, out: TextIO) -> int:
    """Exit 0 with what the profile changes and its notes, or ``EXIT_PROBLEMS`` with one line
    per problem, ``FILE: where: what is wrong`` (the service refuses to start with the first)."""
    try:
        rulebook = Knowledge.load(Settings().knowledge_dir).rulebook
        checked = check_site(path, {rule.id for rule in rulebook.rules}, rulebook.retired)
    except KnowledgeError as exc:
        out.write(f"{exc}\n")
        return EXIT_PROBLEMS
    if checked.site is None:
        out.writelines(f"{path}: {problem}\n" for problem in checked.problems)
        return EXIT_PROBLEMS
    site = checked.site
    changes = effects(site)
    out.write(
        f"{path}: a valid site profile; " + ("it changes:\n" if changes else "the defaults\n")
    )
    out.writelines(f"  {line}\n" for line in changes)
    out.writelines(f"{path}: note: {note}\n" for note in checked.notes)
    for order in site.unplaceable_orders(rulebook.for_site(site).suggested_orders()):
        out.write(f"{path}: note: orderables.{order}: no Epic order preference list item\n")
    for rid, how in site.safety_rules_off().items():
        out.write(
            f"{path}: WARNING: safety rule {rid} is {how} (acknowledge_safety_rules_off: true); "
            "the service warns at every start\n"
        )
    return 0
