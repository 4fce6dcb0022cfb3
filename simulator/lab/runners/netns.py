"""The netns runner: the lab in Linux network namespaces, with nftables firewalls between zones.

Layout (every name starts with :data:`PREFIX`, so ``down`` finds leftovers by name after a crash):

* ``es-sw``: one namespace holding a bridge per zone (``br0``, ``br1`` ... in topology order);
  nothing of the lab lives in the root namespace;
* ``es-<host>`` and ``es-<firewall>``: one namespace per host and per firewall, each interface a
  veth pair whose outer end is enslaved to its zone's bridge, named after the interface
  (``access``, ``wan`` ...) inside, with the topology's address;
* routes from :func:`simulator.lab.network.host_routes`; ``ip_forward`` on in firewall
  namespaces, whose rule files (``lab/firewall/*.nft``) are loaded with ``nft -f``;
* one background process per host with services:
  ``ip netns exec es-HOST python3 -m simulator lab serve --host HOST --runner netns``, its pid,
  log and ready file (bound listeners, JSON) under the state directory (``/run/edgesim``).

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2 and nftables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import simulator
from simulator.errors import LabError
from simulator.lab import flowcheck
from simulator.lab.firewall import render_all
from simulator.lab.flowcheck import FlowResult, MatrixFlow
from simulator.lab.network import ephemeral_port_range, host_routes, link_name
from simulator.lab.topology import Firewall, Host, Interface, Topology
from simulator.matrix import load_matrix
from simulator.pki import ensure_pki

log = logging.getLogger(__name__)

PREFIX = "es-"
SWITCH = f"{PREFIX}sw"
DEFAULT_STATE_DIR = Path("/run/edgesim")
COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def ns_name(node_id: str) -> str:
    return f"{PREFIX}{node_id}"


def requirements_problem() -> str | None:
    """Why this machine cannot run the netns lab, or None."""
    if os.geteuid() != 0:
        return "the netns runner needs root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian package {package})"
    return None


def run(args: list[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a command; a failure becomes a :class:`LabError` naming the command and its error."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"`{args[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def lab_namespaces() -> list[str]:
    """Every namespace whose name has the lab prefix (ours, running or left over)."""
    out = run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def _package_env() -> dict[str, str]:
    """The environment for child processes: this very ``simulator`` package first on the path."""
    env = dict(os.environ)
    root = str(Path(simulator.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class HostProcess:
    host: str
    pid: int
    ready_file: Path
    log_file: Path


@dataclass
class NodeStatus:
    node: str
    kind: str
    """``host`` or ``firewall``."""
    namespace: str
    present: bool
    addresses: list[str] = field(default_factory=list)
    pid: int | None = None
    running: bool = False
    services: list[dict[str, object]] = field(default_factory=list)
    """From the host's ready file: service, state, detail, listeners."""


class NetnsLab:
    """Build, start, check and tear down the lab in network namespaces."""

    runner = "netns"

    def __init__(
        self,
        topology: Topology,
        *,
        certs_dir: Path | str = "certs",
        state_dir: Path | str = DEFAULT_STATE_DIR,
        rules: dict[str, Path] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.topology = topology
        self.certs_dir = Path(certs_dir).resolve()
        self.state_dir = Path(state_dir)
        self.rules_override = dict(rules or {})
        self.python = python

    # ------------------------------------------------------------ paths and names
    def _zone_bridge(self, zone_id: str) -> str:
        index = [z.id for z in self.topology.zones].index(zone_id)
        return f"br{index}"

    def _nodes(self) -> list[tuple[str, str, tuple[Interface, ...]]]:
        nodes: list[tuple[str, str, tuple[Interface, ...]]] = [
            (fw.id, "firewall", fw.interfaces) for fw in self.topology.firewalls
        ]
        nodes += [(h.id, "host", h.interfaces) for h in self.topology.hosts]
        return nodes

    def rules_path(self, fw: Firewall) -> Path:
        """The rule file loaded into a firewall: an override, the repository's, or rendered."""
        if fw.id in self.rules_override:
            return Path(self.rules_override[fw.id])
        relative = Path(fw.rules)
        candidates = (
            [relative]
            if relative.is_absolute()
            else [
                Path.cwd() / relative,
                Path(simulator.__file__).resolve().parent.parent / relative,
            ]
        )
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        # Installed without the repository: render the rules into the state directory.
        target = self.state_dir / "firewall" / relative.name
        target.parent.mkdir(parents=True, exist_ok=True)
        rendered = render_all(self.topology, target.parent)
        target.write_text(rendered[target.parent / relative.name])
        log.warning("%s: %s not found; loaded rules rendered into %s", fw.id, fw.rules, target)
        return target

    # ------------------------------------------------------------ network
    def build_network(self) -> None:
        problem = requirements_problem()
        if problem:
            raise LabError(problem)
        leftovers = lab_namespaces()
        if leftovers:
            raise LabError(
                f"lab namespaces already exist ({', '.join(leftovers[:4])}"
                f"{' ...' if len(leftovers) > 4 else ''}): "
                "`edgesim lab down --runner netns` first"
            )
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        run(["ip", "netns", "add", SWITCH])
        run(["ip", "-n", SWITCH, "link", "set", "lo", "up"])
        for zone in self.topology.zones:
            bridge = self._zone_bridge(zone.id)
            run(["ip", "-n", SWITCH, "link", "add", bridge, "type", "bridge"])
            run(["ip", "-n", SWITCH, "link", "set", bridge, "up"])
        for index, (node, kind, interfaces) in enumerate(self._nodes()):
            ns = ns_name(node)
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            for j, iface in enumerate(interfaces):
                outer = f"n{index}i{j}"
                inner = link_name(iface)
                prefix = self.topology.zone(iface.zone).subnet.prefixlen
                run(
                    [
                        "ip",
                        "-n",
                        SWITCH,
                        "link",
                        "add",
                        outer,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        inner,
                        "netns",
                        ns,
                    ]
                )
                run(
                    [
                        "ip",
                        "-n",
                        SWITCH,
                        "link",
                        "set",
                        outer,
                        "master",
                        self._zone_bridge(iface.zone),
                        "up",
                    ]
                )
                run(["ip", "-n", ns, "addr", "add", f"{iface.address}/{prefix}", "dev", inner])
                run(["ip", "-n", ns, "link", "set", inner, "up"])
            if kind == "firewall":
                self._sysctl(ns, "net.ipv4.ip_forward", "1")
            else:
                # Several addresses on one host and zone (the Edge's access and av): each
                # interface answers ARP only for its own address.
                self._sysctl(ns, "net.ipv4.conf.all.arp_ignore", "1")
                self._sysctl(ns, "net.ipv4.conf.all.arp_announce", "2")
                eph_low, eph_high = ephemeral_port_range(load_matrix())
                self._sysctl(ns, "net.ipv4.ip_local_port_range", f"{eph_low} {eph_high}")
                for route in host_routes(self.topology, self.topology.host(node)):
                    run(["ip", "-n", ns, *route.ip_args()])
        self.load_firewalls()

    def _sysctl(self, ns: str, key: str, value: str) -> None:
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])

    def load_firewalls(self, rules: dict[str, Path] | None = None) -> dict[str, Path]:
        """(Re)load every firewall's rule file; returns which file each firewall got."""
        if rules:
            self.rules_override.update(rules)
        loaded: dict[str, Path] = {}
        for fw in self.topology.firewalls:
            path = self.rules_path(fw)
            ns = ns_name(fw.id)
            if ns not in lab_namespaces():
                raise LabError(f"namespace {ns} does not exist: is the netns lab up?")
            run(["ip", "netns", "exec", ns, "nft", "-f", str(path)])
            loaded[fw.id] = path
        return loaded

    # ------------------------------------------------------------ services
    def _service_hosts(self) -> list[Host]:
        """Hosts that list services (a service not written yet is reported, not started)."""
        return [h for h in self.topology.hosts if h.services]

    def start_services(self, timeout: float = READY_TIMEOUT) -> list[HostProcess]:
        """One ``lab serve`` process per host with services; wait until each is listening."""
        ensure_pki(self.topology, self.certs_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        procs: list[tuple[HostProcess, subprocess.Popen[bytes]]] = []
        for host in self._service_hosts():
            ready = self.state_dir / f"{host.id}.json"
            log_file = self.state_dir / f"{host.id}.log"
            ready.unlink(missing_ok=True)
            with open(log_file, "wb") as out:
                proc = subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns_name(host.id),
                        self.python,
                        "-m",
                        "simulator",
                        "--topology",
                        str(self.topology.path),
                        "lab",
                        "serve",
                        "--host",
                        host.id,
                        "--runner",
                        self.runner,
                        "--certs",
                        str(self.certs_dir),
                        "--ready-file",
                        str(ready),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_package_env(),
                    start_new_session=True,
                )
            hp = HostProcess(host.id, proc.pid, ready, log_file)
            (self.state_dir / f"{host.id}.pid").write_text(f"{proc.pid}\n")
            procs.append((hp, proc))
        deadline = time.monotonic() + timeout
        pending = list(procs)
        while pending:
            for item in list(pending):
                hp, proc = item
                if hp.ready_file.is_file():
                    pending.remove(item)
                elif proc.poll() is not None:
                    tail = _tail(hp.log_file)
                    raise LabError(f"{hp.host}: `lab serve` exited ({proc.returncode}): {tail}")
            if pending and time.monotonic() > deadline:
                names = ", ".join(hp.host for hp, _ in pending)
                raise LabError(f"services not listening within {timeout:.0f} s: {names}")
            if pending:
                time.sleep(0.05)
        return [hp for hp, _ in procs]

    def up(self, timeout: float = READY_TIMEOUT) -> list[HostProcess]:
        self.build_network()
        try:
            return self.start_services(timeout)
        except BaseException:
            self.down()
            raise

    # ------------------------------------------------------------ teardown
    def _our_pids(self) -> set[int]:
        pids: set[int] = set()
        if self.state_dir.is_dir():
            for pid_file in self.state_dir.glob("*.pid"):
                with contextlib.suppress(ValueError, OSError):
                    pid = int(pid_file.read_text().strip())
                    if _is_lab_serve(pid):
                        pids.add(pid)
        for ns in lab_namespaces():
            out = run(["ip", "netns", "pids", ns], check=False)
            pids.update(int(p) for p in out.split() if p.isdigit())
        pids.discard(os.getpid())
        return pids

    def down(self) -> list[str]:
        """Stop every lab process and delete every lab namespace; idempotent, also after a crash.

        Returns the namespaces deleted.
        """
        pids = self._our_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if _alive(p)}
            if pids:
                time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deleted: list[str] = []
        for ns in lab_namespaces():
            run(["ip", "netns", "del", ns], check=False)
            deleted.append(ns)
        if self.state_dir.is_dir():
            for pattern in ("*.pid", "*.json", "*.log"):
                for path in self.state_dir.glob(pattern):
                    path.unlink(missing_ok=True)
        remaining = lab_namespaces()
        if remaining:
            raise LabError(f"could not delete namespaces: {', '.join(remaining)}")
        return deleted

    # ------------------------------------------------------------ status
    def status(self) -> list[NodeStatus]:
        present = set(lab_namespaces())
        statuses: list[NodeStatus] = []
        for node, kind, interfaces in self._nodes():
            ns = ns_name(node)
            st = NodeStatus(node, kind, ns, ns in present)
            if st.present:
                out = run(["ip", "-n", ns, "-4", "-o", "addr", "show"], check=False)
                st.addresses = [
                    f"{parts[3]} ({parts[1]})"
                    for parts in (line.split() for line in out.splitlines())
                    if len(parts) > 3 and parts[1] != "lo"
                ]
            else:
                st.addresses = [f"{i.address} ({link_name(i)}, absent)" for i in interfaces]
            pid_file = self.state_dir / f"{node}.pid"
            if pid_file.is_file():
                with contextlib.suppress(ValueError, OSError):
                    st.pid = int(pid_file.read_text().strip())
                    st.running = _alive(st.pid)
            ready = self.state_dir / f"{node}.json"
            if ready.is_file():
                with contextlib.suppress(ValueError, OSError):
                    st.services = json.loads(ready.read_text()).get("services", [])
            statuses.append(st)
        return statuses

    def check_host(self, host: str, timeout: float = 20.0) -> list[dict[str, object]]:
        """Ask from inside a host's namespace whether each of its listeners answers."""
        ready = self.state_dir / f"{host}.json"
        if not ready.is_file():
            return []
        with contextlib.suppress(ValueError, OSError):
            services = json.loads(ready.read_text()).get("services", [])
            if not any(svc.get("listeners") for svc in services):
                return []
        out = run(
            [
                "ip",
                "netns",
                "exec",
                ns_name(host),
                self.python,
                "-m",
                "simulator",
                "--topology",
                str(self.topology.path),
                "lab",
                "check-host",
                "--host",
                host,
                "--runner",
                self.runner,
                "--certs",
                str(self.certs_dir),
                "--ready-file",
                str(ready),
            ],
            timeout=timeout,
        )
        result: list[dict[str, object]] = json.loads(out or "[]")
        return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _is_lab_serve(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in cmdline and b"simulator" in cmdline


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# ------------------------------------------------------------------ plain flows across the lab


def check_flows(
    flows: list[MatrixFlow], *, timeout: float = 1.5, python: str = sys.executable
) -> list[FlowResult]:
    """Every flow tried across the netns lab (see :func:`simulator.lab.flowcheck.check_flows`)."""
    return flowcheck.check_flows(
        flows,
        lambda host: ["ip", "netns", "exec", ns_name(host)],
        timeout=timeout,
        python=python,
        env=_package_env(),
    )
