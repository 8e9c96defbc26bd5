"""python -m benchmarks.fuzz: the long fuzz run over HTTP, as an attacker or a buggy EHR would.

Mutates the fixture requests at random (dropped, duplicated and retyped keys, nulls, huge
strings, deep nesting, NaN, invalid UTF-8, resources of the wrong type, huge Bundles,
impossible dates, codings without a system) and feedback bodies, and sends about a third of the
hook calls without prefetch to a FHIR server that misbehaves (benchmarks/misbehaving_fhir.py).
It reports answers by status, non-JSON answers, hangs, the worker's memory, and whether every
fixture still answers its expected cards afterwards. The suite's bounded, seeded version of the
same idea is tests/test_mutations.py; this one is for 20,000 requests and more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from ipt_cds.devtools.fixtures import FIXTURES, service_of_hook

from .http import uvicorn
from .misbehaving_fhir import MODES
from .site import no_repeat_site

Json = Any
HUGE_STRING_CHARS = 200_000
DEEP_NESTING = 200
# The client gives up here: an answer that takes longer counts as a hang.
HANG_SECONDS = 60.0


def _paths(node: Json, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _replace(node: Json, path: tuple[Any, ...], make: Callable[[Json], Json]) -> Json:
    if not path:
        return make(node)
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, make)}
    copy = list(node)
    copy[head] = _replace(copy[head], rest, make)
    return copy


def _drop(node: Json, path: tuple[Any, ...]) -> Json:
    if not path:
        return node
    parent, key = path[:-1], path[-1]
    if isinstance(key, int):
        return _replace(node, parent, lambda p: p[:key] + p[key + 1 :])
    return _replace(node, parent, lambda p: {k: v for k, v in p.items() if k != key})


def _nested(depth: int) -> Json:
    value: Json = "x"
    for _ in range(depth):
        value = [value]
    return value


MUTATIONS: dict[str, Callable[[random.Random, Json], Json]] = {
    "null": lambda r, v: None,
    "other-type": lambda r, v: r.choice([0, -1, 1.5, "", "text", [], {}, True, [1, "a"], {"a": 1}]),
    "huge-string": lambda r, v: "A" * HUGE_STRING_CHARS,
    "deep-nesting": lambda r, v: _nested(DEEP_NESTING),
    "duplicate": lambda r, v: [*v, *v] if isinstance(v, list) else [v, v],
    "wrong-resource": lambda r, v: {"resourceType": r.choice(["Patient", "Bundle", "Basic"])},
    "impossible-date": lambda r, v: r.choice(
        ["2026-02-30", "99999-01-01", "0000-00-00", "yesterday"]
    ),
    "coding-without-system": lambda r, v: {"coding": [{"code": "F32.1"}]},
    "many-entries": lambda r, v: {"resourceType": "Bundle", "entry": [{"resource": {}}] * 20_000},
}


def mutate(rng: random.Random, body: Json) -> tuple[str, bytes]:
    """One mutation of a request: its name, and the bytes to send."""
    kind = rng.choice([*MUTATIONS, "drop", "nan", "invalid-utf8", "truncated-json"])
    raw = orjson.dumps(body)
    if kind == "nan":
        return kind, raw.replace(b"}", b',"score":NaN}', 1)
    if kind == "invalid-utf8":
        return kind, raw.replace(b'"', b'"\xff\xfe', 1)
    if kind == "truncated-json":
        return kind, raw[: rng.randrange(1, len(raw))]
    path = rng.choice(_paths(body)[1:] or [()])
    if kind == "drop":
        return kind, orjson.dumps(_drop(body, path))
    changed = _replace(body, path, lambda v: MUTATIONS[kind](rng, v))
    return kind, orjson.dumps(changed)


def _feedback(rng: random.Random) -> Json:
    item: Json = {
        "card": rng.choice(["8d1b8c6e-0000-4000-8000-000000000000", "not-a-uuid", 7, None]),
        "outcome": rng.choice(["accepted", "overridden", "ignored", None]),
        "outcomeTimestamp": rng.choice(["2026-11-29T10:00:00Z", "yesterday", None]),
    }
    if rng.random() < 0.5:
        item["overrideReason"] = {"reason": {"code": "x", "system": None}}
    return {"feedback": [item] * rng.choice([1, 2, 1_001])}


class Tally:
    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.non_json = 0
        self.hangs = 0
        self.errors: list[dict[str, Any]] = []

    def record(self, what: str, status: int, answer: httpx.Response | None, body: bytes) -> None:
        self.status[str(status)] += 1
        if answer is not None and not _is_json(answer):
            self.non_json += 1
        if status >= 500 and len(self.errors) < 50:
            self.errors.append(
                {"what": what, "status": status, "body": body[:2000].decode("latin-1")}
            )


def _is_json(answer: httpx.Response) -> bool:
    if answer.status_code == 499 or not answer.content:
        return answer.status_code == 499
    try:
        answer.json()
    except ValueError:
        return False
    content_type: str = answer.headers.get("content-type", "")
    return content_type.startswith("application/json")


def _rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


async def _run(args: argparse.Namespace, service: str, fhir: str, tally: Tally) -> None:
    rng = random.Random(args.seed)
    requests = [json.loads(p.read_text()) for p in sorted((FIXTURES / "requests").glob("*.json"))]
    requests = [r for r in requests if "prefetch" in r]
    services = service_of_hook()
    limit = asyncio.Semaphore(args.concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        base = dict(rng.choice(requests))
        mode = None
        if rng.random() < args.fetch_share:
            mode = rng.choice(MODES)
            base = {k: v for k, v in base.items() if k != "prefetch"}
            base["fhirServer"] = f"{fhir}/{mode}/fhir"
        if rng.random() < args.feedback_share:
            path = f"/cds-services/{services[base['hook']]}/feedback"
            what, raw = mutate(rng, _feedback(rng)) if rng.random() < 0.7 else ("feedback", b"")
        else:
            path = f"/cds-services/{services[base['hook']]}"
            what, raw = mutate(rng, base) if rng.random() < args.mutate_share else ("plain", b"")
            raw = raw or orjson.dumps(base)
        what = f"{what} via {mode}" if mode else what
        async with limit:
            try:
                answer = await client.post(
                    path, content=raw, headers={"content-type": "application/json"}
                )
            except httpx.TimeoutException:
                tally.hangs += 1
                return
            except httpx.TransportError as exc:
                tally.record(what, 599, None, f"{type(exc).__name__} {path}".encode())
                return
        tally.record(what, answer.status_code, answer, raw)

    async with httpx.AsyncClient(base_url=service, timeout=HANG_SECONDS) as client:
        await asyncio.gather(*(one(client, i) for i in range(args.requests)))


async def _fixture_cards(service: str) -> dict[str, dict[str, str]]:
    """Every fixture request's cards (rule -> indicator), as this server answers them now.

    Compared before and after the fuzz rather than with expected.json: the requests are dated
    for the fixtures' reference day, and the served clock is today's, so windows shift."""
    expected = json.loads((FIXTURES / "expected.json").read_text())
    cards = {}
    async with httpx.AsyncClient(base_url=service, timeout=HANG_SECONDS) as client:
        for name, want in expected.items():
            body = (FIXTURES / "requests" / f"{name}.json").read_bytes()
            answer = await client.post(f"/cds-services/{want['service']}", content=body)
            found = answer.json().get("cards", [])
            cards[name] = {c["source"]["topic"]["code"]: c["indicator"] for c in found}
    return cards


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fetch-share", type=float, default=1 / 3)
    parser.add_argument("--feedback-share", type=float, default=0.1)
    parser.add_argument("--mutate-share", type=float, default=0.9)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="ipt-fuzz-"))
    resources = [
        entry["resource"]
        for path in sorted((FIXTURES / "patients").glob("*.json"))
        for entry in json.loads(path.read_text())["entry"]
    ]
    (folder / "resources.json").write_bytes(orjson.dumps(resources))
    with uvicorn(
        "benchmarks.misbehaving_fhir:app",
        1,
        {"FUZZ_RESOURCES": str(folder / "resources.json")},
        ready="/good/fhir/metadata",
    ) as (fhir, _):
        bases = [f"{fhir}/{mode}/fhir" for mode in MODES]
        env = {
            "IPT_CDS_DATABASE_URL": f"sqlite:///{folder / 'store.sqlite3'}",
            "IPT_CDS_FHIR_ALLOWLIST": json.dumps(bases),
            "IPT_CDS_LOG_LEVEL": "ERROR",
            # The fixtures are called before and after the run: with once per visit on, the
            # second time would hold their cards back.
            "IPT_CDS_SITE_FILE": str(no_repeat_site()),
        }
        with uvicorn("ipt_cds.http.app:served_app()", 1, env) as (service, pid):
            baseline = asyncio.run(_fixture_cards(service))
            before = _rss_mb(pid)[0]
            tally = Tally()
            asyncio.run(_run(args, service, fhir, tally))
            after, peak = _rss_mb(pid)
            now = asyncio.run(_fixture_cards(service))
            wrong = sum(now[name] != cards for name, cards in baseline.items())
    figures = {
        "requests": args.requests,
        "status": dict(sorted(tally.status.items())),
        "non_json": tally.non_json,
        "hangs": tally.hangs,
        "rss_mb": {"before": round(before, 1), "after": round(after, 1), "peak": round(peak, 1)},
        "fixtures_changed": wrong,
        "errors": tally.errors,
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "errors"}, indent=2))
    for error in tally.errors[:5]:
        print(f"5xx: {error['what']} -> {error['status']}: {error['body'][:300]!r}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
