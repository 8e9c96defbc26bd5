"""A reverse proxy over real TCP on 127.0.0.1 that gives a real FHIR server the habits of the
servers health systems run (issue 23), for end-to-end tests of the fetch path with a real
connection pool. The first path segment picks the personality, the rest is the upstream's path::

    http://127.0.0.1:PORT/strict-us-core/fhir/MedicationRequest?patient=...

    everything       forwards every request as it is
    strict-us-core   a US Core statement (no MedicationStatement, no searchInclude); refuses
                     _include and a MedicationRequest search without intent (400), and
                     MedicationStatement (404)
    narrow-scopes    a token whose scopes leave out ServiceRequest and Procedure (403)
    no-medications   a token whose scopes leave out MedicationRequest and MedicationStatement
    no-include       ignores _include (Medplum's router), and answers /metadata with an empty
                     searchset where the statement should be

Bundle ``next`` links point at the upstream; they are rewritten to the personality's base, since
the service follows only links on the server it asked. The proxy runs in a thread of its own
(the tests using it are synchronous) and records every request it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import orjson

Params = list[tuple[str, str]]
# (status, body) the proxy answers itself; None forwards the request.
Local = tuple[int, dict[str, Any]]
Habit = Callable[[str, str, Params], Local | None]
FHIR_JSON = "application/fhir+json"


def outcome(code: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]}


def us_core_statement(*, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """US Core's server statement, in short: the searches it requires, no MedicationStatement,
    no _include anywhere (and none of the types ``without``)."""
    searches = {
        "Patient": ["_id", "identifier", "name"],
        "Condition": ["patient", "category", "clinical-status", "code"],
        "Observation": ["patient", "category", "code", "date"],
        "MedicationRequest": ["patient", "intent", "status", "authoredon"],
        "Medication": [],
        "ServiceRequest": ["patient", "category", "code", "status"],
        "Procedure": ["patient", "code", "date", "status"],
    }
    resources = [
        {"type": kind, "searchParam": [{"name": n, "type": "token"} for n in names]}
        for kind, names in searches.items()
        if kind not in without
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": resources}],
    }


def _is_search(path: str) -> bool:
    return "/" not in path or path.endswith("/_search")


def _everything(kind: str, path: str, params: Params) -> Local | None:
    return None


def _strict_us_core(kind: str, path: str, params: Params) -> Local | None:
    if path == "metadata":
        return 200, us_core_statement()
    if any(name.partition(":")[0] == "_include" for name, _ in params):
        return 400, outcome("not-supported")
    if kind == "MedicationStatement":
        return 404, outcome("not-supported")
    searched = kind == "MedicationRequest" and _is_search(path)
    if searched and not any(name == "intent" for name, _ in params):
        return 400, outcome("required")
    return None


def _forbidding(*kinds: str) -> Habit:
    def habit(kind: str, path: str, params: Params) -> Local | None:
        return (403, outcome("forbidden")) if kind in kinds else None

    return habit


def _no_include(kind: str, path: str, params: Params) -> Local | None:
    if path == "metadata":
        return 200, {"resourceType": "Bundle", "type": "searchset"}
    return None


@dataclass(frozen=True)
class Personality:
    habit: Habit
    # Left out of the query before it is forwarded: a server that ignores it.
    ignores_include: bool = False


PERSONALITIES: dict[str, Personality] = {
    "everything": Personality(_everything),
    "strict-us-core": Personality(_strict_us_core),
    "narrow-scopes": Personality(_forbidding("ServiceRequest", "Procedure")),
    "no-medications": Personality(_forbidding("MedicationRequest", "MedicationStatement")),
    "no-include": Personality(_no_include, ignores_include=True),
}
# The resource types each personality refuses whatever the search.
REFUSED: dict[str, frozenset[str]] = {
    "narrow-scopes": frozenset({"ServiceRequest", "Procedure"}),
    "no-medications": frozenset({"MedicationRequest", "MedicationStatement"}),
}


@dataclass(frozen=True)
class Seen:
    """A request as the proxy received it: the FHIR path (``MedicationRequest``,
    ``Medication/m1``, ``metadata``), its query, and the status answered."""

    personality: str
    path: str
    params: Params
    status: int

    @property
    def kind(self) -> str:
        return self.path.partition("/")[0]

    def names(self) -> set[str]:
        return {name for name, _ in self.params}


@dataclass
class PersonalityFhir:
    upstream: str
    port: int = 0
    seen: list[Seen] = field(default_factory=list, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _upstream: httpx.AsyncClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream.rstrip("/"))
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path  # "/fhir"

    def base(self, personality: str) -> str:
        return f"http://127.0.0.1:{self.port}/{personality}{self._path}"

    def seen_by(self, personality: str) -> list[Seen]:
        return [s for s in self.seen if s.personality == personality]

    @contextlib.contextmanager
    def running(self) -> Iterator[PersonalityFhir]:
        """Serves from a thread with its own event loop until the block ends."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            async with httpx.AsyncClient(timeout=30, follow_redirects=False) as upstream:
                self._upstream = upstream
                server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
                self.port = server.sockets[0].getsockname()[1]
                ready.set()
                try:
                    await stop.wait()
                finally:
                    server.close()
                    for task in list(self._tasks):
                        task.cancel()
                    await asyncio.gather(*self._tasks, return_exceptions=True)
                    await server.wait_closed()

        def run() -> None:
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # surfaced to the test, not lost in the thread
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="personality-fhir", daemon=True)
        thread.start()
        ready.wait(timeout=30)
        if failure or not self.port:
            raise RuntimeError(f"the personality proxy did not start: {failure}")
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *lines = head.split("\r\n")
                method, target = line.split(" ")[:2]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (h.partition(":") for h in lines if h)
                }
                if int(headers.get("content-length", "0")):
                    await reader.readexactly(int(headers["content-length"]))
                status, body, kind = await self._answer(method, target, headers)
                writer.write(_head(status, kind, len(body)) + body)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down: see tests/misbehaving_fhir.py
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _answer(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        name, _, rest = target.lstrip("/").partition("/")
        personality = PERSONALITIES.get(name)
        raw_path, _, query = rest.partition("?")
        if personality is None or not ("/" + raw_path).startswith(self._path + "/"):
            return 404, orjson.dumps(outcome("not-found")), FHIR_JSON
        path = unquote(raw_path.removeprefix(self._path.lstrip("/")).strip("/"))
        params = parse_qsl(query, keep_blank_values=True)
        local = personality.habit(path.partition("/")[0], path, params)
        if local is not None:
            self.seen.append(Seen(name, path, params, local[0]))
            return local[0], orjson.dumps(local[1]), FHIR_JSON
        if personality.ignores_include:
            query = "&".join(
                p for p in query.split("&") if unquote(p.partition("=")[0]) != "_include"
            )
        url = f"{self._origin}/{raw_path}" + (f"?{query}" if query else "")
        forwarded: dict[str, str] = {
            k: headers[k] for k in ("authorization", "accept") if k in headers
        }
        try:
            response = await self._upstream.request(method, url, headers=forwarded)
        except httpx.HTTPError:
            self.seen.append(Seen(name, path, params, 502))
            return 502, orjson.dumps(outcome("transient")), FHIR_JSON
        self.seen.append(Seen(name, path, params, response.status_code))
        kind = response.headers.get("content-type", FHIR_JSON)
        return response.status_code, self._relinked(response.content, name), kind

    def _relinked(self, body: bytes, personality: str) -> bytes:
        """The body with a Bundle's links on the personality's base instead of the upstream's."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(parsed, dict) or parsed.get("resourceType") != "Bundle":
            return body
        links = parsed.get("link")
        if not isinstance(links, list):
            return body
        upstream, mine = self._origin + self._path, self.base(personality)
        for link in links:
            url = link.get("url") if isinstance(link, dict) else None
            if isinstance(url, str) and url.startswith(upstream + "/"):
                link["url"] = mine + url.removeprefix(upstream)
        return orjson.dumps(parsed)


def _head(status: int, kind: str, length: int) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {kind}", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
