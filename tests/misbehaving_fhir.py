"""A FHIR server that misbehaves on purpose, over real TCP on 127.0.0.1: for the tests that
need a real connection pool (MockTransport and respx have none) and for measuring memory.

The first path segment picks the behaviour, the rest is the FHIR path::

    http://127.0.0.1:PORT/good/fhir/Patient/pat-1        a patient
    http://127.0.0.1:PORT/bad-gzip/fhir/Condition?...    "gzip" that is not gzip

Every body is written as it is generated (a 1 GiB bomb is never held), and the server stops
writing when the client hangs up. ``python -m tests.misbehaving_fhir PORT`` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import orjson

PATIENT_ID = "pat-1"
MIB = 1024 * 1024

Behaviour = Callable[["Answer"], Awaitable[bool]]


def patient(pid: str = PATIENT_ID) -> bytes:
    return orjson.dumps(
        {"resourceType": "Patient", "id": pid, "birthDate": "1980-05-01", "gender": "female"}
    )


def searchset(*resources: dict[str, object]) -> bytes:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    return orjson.dumps(bundle)


def condition(cid: str, pid: str = PATIENT_ID) -> dict[str, object]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def gzip_compress(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def big_bundle(size: int) -> Iterator[bytes]:
    """A well-formed searchset Bundle of about ``size`` bytes, 64 KiB of entries at a time
    (the same ones over and over: cheap to send, and only its size matters)."""
    entries = []
    for n in range(400):
        entries.append(orjson.dumps({"resource": condition(f"c{n}"), "search": {"mode": "match"}}))
    block = b",".join(entries)
    yield b'{"resourceType":"Bundle","type":"searchset","entry":[' + block
    for _ in range(size // len(block)):
        yield b"," + block
    yield b"]}"


def gzip_bomb(size: int) -> Iterator[bytes]:
    """gzip of a FHIR Bundle padded with ``size`` bytes of spaces, ~1 KiB per MiB. One MiB is
    compressed once: after a full flush nothing refers back, so its bytes can be repeated."""
    head, tail, block = b'{"resourceType":"Bundle","type":"searchset","entry":[]', b"}", b" " * MIB
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip header: deflate, no name
    yield packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    compressed = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    crc, length = zlib.crc32(head), len(head)
    for _ in range(size // MIB):
        crc, length = zlib.crc32(block, crc), length + MIB
        yield compressed
    crc, length = zlib.crc32(tail, crc), length + len(tail)
    yield packer.compress(tail) + packer.flush() + struct.pack("<II", crc, length & 0xFFFFFFFF)


@dataclass
class Answer:
    """One request and the means to answer it."""

    target: str
    fhir_path: str
    writer: asyncio.StreamWriter
    server: MisbehavingFhir

    async def send(
        self,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
        length: int | None = None,
    ) -> bool:
        head = {"Content-Type": "application/fhir+json", **(headers or {})}
        head["Content-Length"] = str(len(body) if length is None else length)
        self.writer.write(self._head(status, head) + body)
        await self.writer.drain()
        return True

    async def stream(self, chunks: Iterator[bytes], headers: dict[str, str] | None = None) -> bool:
        head = {
            "Content-Type": "application/fhir+json",
            "Transfer-Encoding": "chunked",
            **(headers or {}),
        }
        self.writer.write(self._head(200, head))
        for chunk in chunks:
            if chunk:
                self.writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.server.bytes_sent += len(chunk)
                await self.writer.drain()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        return True

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @property
    def is_read(self) -> bool:
        return "?" not in self.fhir_path and self.fhir_path.count("/") == 1


async def _good(a: Answer) -> bool:
    """The patient on a read; one Condition on a search of Conditions; nothing on others."""
    if a.is_read:
        return await a.send(patient())
    if a.fhir_path.startswith("Condition?"):
        return await a.send(searchset(condition("c1")))
    return await a.send(searchset())


async def _bad_gzip(a: Answer) -> bool:
    return await a.send(b"this is not gzip at all " * 100, headers={"Content-Encoding": "gzip"})


async def _nested_gzip(a: Answer) -> bool:
    body = gzip_compress(gzip_compress(searchset(condition("c1"))))
    return await a.send(body, headers={"Content-Encoding": "gzip, gzip"})


async def _unknown_encoding(a: Answer) -> bool:
    return await a.send(searchset(), headers={"Content-Encoding": "compress"})


async def _gzip_bomb(a: Answer) -> bool:
    return await a.stream(gzip_bomb(a.server.huge_bytes), headers={"Content-Encoding": "gzip"})


async def _large(a: Answer) -> bool:
    return await a.stream(big_bundle(a.server.huge_bytes))


async def _truncated(a: Answer) -> bool:
    """Promises 100 kB, sends 1 kB, hangs up."""
    await a.send(searchset(condition("c1"))[:1000], length=100_000)
    return False


async def _truncated_gzip(a: Answer) -> bool:
    """A complete HTTP body holding the first half of a gzip stream."""
    body = gzip_compress(searchset(*(condition(f"c{i}") for i in range(50))))
    return await a.send(body[: len(body) // 2], headers={"Content-Encoding": "gzip"})


async def _stall(a: Answer) -> bool:
    """Headers and part of the body, then nothing."""
    a.writer.write(Answer._head(200, {"Content-Length": "100000"}) + b'{"resourceType":')
    await a.writer.drain()
    await asyncio.sleep(3600)
    return False


async def _slow(a: Answer) -> bool:
    await asyncio.sleep(3600)
    return False


async def _hang_up(a: Answer) -> bool:
    return False


BEHAVIOURS: dict[str, Behaviour] = {
    "good": _good,
    "bad-gzip": _bad_gzip,
    "nested-gzip": _nested_gzip,
    "unknown-encoding": _unknown_encoding,
    "gzip-bomb": _gzip_bomb,
    "large": _large,
    "truncated": _truncated,
    "truncated-gzip": _truncated_gzip,
    "stall": _stall,
    "slow": _slow,
    "hang-up": _hang_up,
}


@dataclass
class MisbehavingFhir:
    huge_bytes: int = 64 * MIB
    port: int = 0
    connections: int = 0
    bytes_sent: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def base(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}/fhir"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MisbehavingFhir]:
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
                behaviour, _, rest = target.lstrip("/").partition("/")
                answer = Answer(target, rest.removeprefix("fhir/"), writer, self)
                if not await BEHAVIOURS[behaviour](answer):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # Shutting down. Ending normally rather than cancelled: asyncio's stream callback
            # would report a cancelled connection task as an error.
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)


async def _main(port: int, huge: int) -> None:
    async with MisbehavingFhir(huge_bytes=huge, port=port).running() as server:
        print(f"listening on {server.base('<behaviour>')}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        _main(int(args[0]) if args else 8099, int(args[1]) if len(args) > 1 else 1024 * MIB)
    )
