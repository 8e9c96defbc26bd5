"""docs/rules.md, generated from cards/ so that a clinician can review every rule in one place.

``ipt-cds rules-doc > docs/rules.md`` writes it; a test fails when the file is stale.
"""

from __future__ import annotations

from ipt_cds.devtools import glossary
from ipt_cds.knowledge.base import Knowledge
from ipt_cds.knowledge.rule_compiler import CompiledRule

HEADER = """# The IPT rules, for clinical review

Generated from `cards/` by `ipt-cds rules-doc > docs/rules.md`; do not edit by hand. The
clinical contract is `the clinical spec`; the evidence is the UpToDate topic "Interpersonal
Psychotherapy (IPT) for depressed adults" (2023), cited by its section names and reference
numbers. Card text is a template: `{{ ... }}` is filled from the patient's record, `{% ... %}`
chooses text.
"""


def render(knowledge: Knowledge) -> str:
    book = knowledge.rulebook
    out = [HEADER, "## Contents\n"]
    for rule in book.rules:
        out.append(f"- [`{rule.id}`](#{rule.id}) — {rule.spec.title}")
    out.append("")
    if book.families:
        out.append("## Families\n")
        for name, members in book.families.items():
            listed = ", ".join(f"`{m}`" for m in members)
            out.append(
                f"- **{name}**: {listed}. Only the first that fires stands; "
                "its card names the others' reasons.\n"
            )
    out.append("The facts rules name are explained in the [glossary](#glossary-of-facts).\n")
    out.append("## Parameters\n")
    out.append("| parameter | value |\n|---|---|")
    for name, value in knowledge.params.items():
        out.append(f"| `{name}` | `{value}` |")
    out.append("")
    for rule in book.rules:
        out.extend(_rule(rule))
    out.extend(glossary.render(knowledge))
    return "\n".join(out).rstrip() + "\n"


def _rule(rule: CompiledRule) -> list[str]:
    spec = rule.spec
    ev = spec.evidence
    indicator = (
        spec.indicator
        if isinstance(spec.indicator, str)
        else "; ".join(
            f"{k} when `{v}`" if k != "otherwise" else f"otherwise {v}"
            for k, v in spec.indicator.items()
        )
    )
    lines = [
        f'<a id="{spec.id}"></a>',
        f"## {spec.title}\n",
        f"`{spec.id}` · hooks: {', '.join(spec.hooks)} · indicator: {indicator}\n",
        f"**When:** {spec.when.strip()}\n",
        f"**Then:** {spec.then.strip()}\n",
        f"**Logic:** `{spec.applies.strip()}`\n",
        f"**Evidence:** [{ev.section}]"
        + (f", topic references {', '.join(map(str, ev.refs))}" if ev.refs else "")
        + (f". {ev.figures.strip()}" if ev.figures.strip() else "")
        + "\n",
        "**Card summary:**\n",
        f"    {spec.card.summary.strip()}\n",
        "**Card detail:**\n",
        *[f"    {line}".rstrip() for line in spec.card.detail.strip().splitlines()],
        "",
    ]
    if spec.reason:
        lines += [f"**Reason named on the family's standing card:** `{spec.reason}`\n"]
    if spec.suggestions:
        lines.append("**Suggestions:**\n")
        for s in spec.suggestions:
            cond = f" (when `{s.when}`)" if s.when else ""
            lines.append(f"- {s.label} — `{s.action}`{cond}")
        lines.append("")
    if spec.overrideReasons:
        lines.append(
            "**Override reasons:** " + "; ".join(r.display for r in spec.overrideReasons) + "\n"
        )
    return lines
