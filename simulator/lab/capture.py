"""Packet captures of a running lab, as pcapng files Wireshark decrypts.

A runner's :meth:`~simulator.lab.runners.base.Runner.capture` names where to capture
(:class:`CapturePoint`: a node, the interface, the direction) and where the lab's processes log
their TLS session secrets (:class:`KeySource`); :func:`packet_capture` does the rest, the same
way for every runner:

1. in each node, ``sh -c 'echo $$ >&2; exec tcpdump -i IFACE -U -w - FILTER'`` through the
   runner's :meth:`exec_argv` (``ip netns exec``, ``docker compose exec -T``, or nothing for the
   embedded lab), its stream written to a part file here; the block starts once every tcpdump
   says it is listening;
2. this process and its children (probes run inside nodes inherit the environment) log their
   TLS secrets to a key log of their own (``SSLKEYLOGFILE``; :mod:`simulator.tls` honours it);
3. at the end each tcpdump is stopped with SIGINT (``kill`` through the same prefix), the parts
   are merged by time (``mergecap``), the key logs concatenated and embedded with ``editcap
   --inject-secrets tls,KEYS``: one pcapng per capture, decrypted SIP and XMPP in Wireshark.

Capturing what each host *sends* (:func:`sent_by`) sees every packet once, at its sender,
including those a firewall then drops. Needs tcpdump in the nodes (the lab image has it) and Wireshark's
``mergecap`` and ``editcap`` here (Debian ``wireshark-common``, pulled in by ``tshark``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulator.aioloop import run_command
from simulator.errors import LabError

log = logging.getLogger(__name__)

KEYLOG_ENV = "SSLKEYLOGFILE"
"""The variable every TLS context of edgesim (and Python's default context) logs secrets to."""
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
READ_TIMEOUT = 30.0
"""Seconds one read of a node's TLS key log may take (through ``docker compose exec``)."""


@dataclass(frozen=True)
class CapturePoint:
    """Where one tcpdump runs."""

    node: str
    """The host (or ``lab`` for the embedded lab's loopback)."""
    argv: tuple[str, ...]
    """The prefix that runs a command there (the runner's ``exec_argv``)."""
    interface: str = "any"
    bpf: str = ""
    """A capture filter: :func:`sent_by` where several points share packets; the embedded
    lab's loopback addresses."""


def sent_by(addresses: Sequence[str]) -> str:
    """The capture filter of what a node sends, so that every packet is captured once, at its
    sender: its outgoing packets, and those on its loopback (which ``any`` shows only as
    incoming, with one of the node's own addresses as source)."""
    own = " or ".join(["src net 127.0.0.0/8", *(f"src host {a}" for a in addresses)])
    return f"outbound or (inbound and ({own}))"


@dataclass(frozen=True)
class KeySource:
    """A TLS key log (NSS key log format) some lab process writes."""

    argv: tuple[str, ...]
    """The prefix that reads files there (``[]``: this machine)."""
    path: str


@dataclass
class CaptureResult:
    """What a capture wrote, once its block has ended."""

    path: Path
    packets: int = 0
    secrets: int = 0
    """Key log lines embedded (about two per TLS 1.3 session)."""
    problems: list[str] = field(default_factory=list)
    """What will not decrypt, and why (a key log that could not be read, none at all)."""

    def summary(self) -> str:
        """``DIR/x.pcapng: 812 packets, 24 TLS secrets embedded``."""
        return f"{self.path}: {self.packets} packets, {self.secrets} TLS secrets embedded"


def capture_tools_problem() -> str | None:
    """Why this machine cannot write a decryptable capture, or None."""
    for tool in ("mergecap", "editcap"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian package wireshark-common, or tshark)"
    return None


@dataclass
class Dump:
    point: CapturePoint
    part: Path
    proc: asyncio.subprocess.Process
    pid: str = ""
    stderr: list[str] = field(default_factory=list)


async def _start(point: CapturePoint, part: Path) -> Dump:
    bpf = f"'{point.bpf}'" if point.bpf else ""
    script = f"echo $$ >&2; exec tcpdump -i {point.interface} -n -U --immediate-mode -w - {bpf}"
    out = open(part, "wb")  # noqa: SIM115 (handed to the child, closed right after)
    try:
        proc = await asyncio.create_subprocess_exec(
            *point.argv, "sh", "-c", script.strip(),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        raise LabError(f"{point.node}: cannot start tcpdump: {exc.strerror}") from None
    finally:
        out.close()
    dump = Dump(point, part, proc)
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            dump.pid = (await proc.stderr.readline()).decode().strip()
            while True:
                line = (await proc.stderr.readline()).decode(errors="replace").strip()
                if not line:
                    break
                dump.stderr.append(line)
                if "listening on" in line:
                    return dump
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
    why = dump.stderr[-1] if dump.stderr else f"no answer within {START_TIMEOUT:.0f} s"
    raise LabError(f"{point.node}: tcpdump did not start: {why}")


async def _stop(dump: Dump) -> None:
    """SIGINT the tcpdump where it runs, so it flushes its last packets and exits."""
    if dump.pid.isdigit():
        if dump.point.argv:
            killer = await asyncio.create_subprocess_exec(
                *dump.point.argv, "kill", "-INT", dump.pid,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await killer.wait()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(dump.pid), signal.SIGINT)
    assert dump.proc.stderr is not None
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            rest = await dump.proc.stderr.read()
            await dump.proc.wait()
    except TimeoutError:
        dump.proc.kill()
        await dump.proc.wait()
        rest = b""
    dump.stderr += rest.decode(errors="replace").splitlines()


def _captured(dump: Dump) -> int:
    for line in dump.stderr:
        words = line.split()
        if len(words) >= 3 and words[1:3] == ["packets", "captured"] and words[0].isdigit():
            return int(words[0])
    return 0


async def read_key_log(source: KeySource) -> tuple[bytes, str | None]:
    """The key log's lines (none when its processes did no TLS yet, so never wrote it), and
    why it could not be read, if it could not (read twice: a busy Docker engine can fail an
    ``exec`` now and then)."""
    if not source.argv:
        try:
            return Path(source.path).read_bytes(), None
        except FileNotFoundError:
            return b"", None
        except OSError as exc:
            return b"", f"{source.path}: {exc.strerror}"
    why = ""
    where = f"{source.path} in {source.argv[-1]}"
    for _ in range(2):
        done = await run_command(
            [*source.argv, "sh", "-c", 'test ! -e "$1" || cat "$1"', "sh", source.path],
            timeout=READ_TIMEOUT,
        )
        if done.returncode == 0:
            return done.out, None
        if done.returncode is None:
            why = f"{where}: {done.why}"
        else:
            last = done.last_error
            why = f"{where}: exit {done.returncode}" + (f", {last}" if last else "")
    return b"", why


async def _tool(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise LabError(f"`{argv[0]}` failed: {last}")


@contextlib.asynccontextmanager
async def tcpdumps(points: Sequence[CapturePoint], work: Path) -> AsyncIterator[list[Dump]]:
    """A tcpdump at each point while the block runs (started before it, stopped after it);
    each writes its part file (pcap) in ``work``: ``dump.part`` of the yielded dumps."""
    dumps: list[Dump] = []
    try:
        for index, point in enumerate(points):
            dumps.append(await _start(point, work / f"{index}-{point.node}.pcap"))
        yield dumps
    finally:
        await asyncio.gather(*(_stop(d) for d in dumps), return_exceptions=True)


@contextlib.asynccontextmanager
async def packet_capture(
    out: Path, points: Sequence[CapturePoint], keys: Sequence[KeySource] = ()
) -> AsyncIterator[CaptureResult]:
    """Capture at ``points`` while the block runs; then write ``out`` (pcapng) with the TLS
    secrets of ``keys`` and of this process embedded. The result is filled in on exit."""
    problem = capture_tools_problem()
    if problem is not None:
        raise LabError(f"cannot write a capture: {problem}")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = CaptureResult(out)
    with tempfile.TemporaryDirectory(prefix="edgesim-capture-") as tmp:
        work = Path(tmp)
        own_keys = os.environ.get(KEYLOG_ENV)
        if own_keys is None:
            os.environ[KEYLOG_ENV] = str(work / "this-process.keys")
        dumps: list[Dump] = []
        try:
            async with tcpdumps(points, work) as dumps:
                yield result
        finally:
            if own_keys is None:
                os.environ.pop(KEYLOG_ENV, None)
        mine = KeySource((), own_keys or str(work / "this-process.keys"))
        sources = [mine, *(s for s in keys if s != mine)]
        read = [await read_key_log(s) for s in sources]
        secrets = b"".join(lines for lines, _ in read)
        result.problems += [
            f"a TLS key log could not be read ({why}): the sessions it holds stay encrypted"
            for _, why in read
            if why
        ]
        result.packets = sum(_captured(d) for d in dumps)
        result.secrets = sum(1 for line in secrets.splitlines() if line and line[:1] != b"#")
        keys_file = work / "tls.keys"
        keys_file.write_bytes(secrets)
        merged = work / "merged.pcapng"
        parts = [str(d.part) for d in dumps if d.part.stat().st_size > 0]
        if not parts:
            raise LabError("the capture is empty: no tcpdump wrote anything")
        await _tool("mergecap", "-F", "pcapng", "-w", str(merged), *parts)
        if secrets:
            await _tool("editcap", "--inject-secrets", f"tls,{keys_file}", str(merged), str(out))
        else:
            result.problems.append("no TLS secrets were logged: TLS stays encrypted")
            shutil.copyfile(merged, out)
    log.info("capture %s: %d packets, %d secrets", out, result.packets, result.secrets)
