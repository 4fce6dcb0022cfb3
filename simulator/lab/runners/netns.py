"""The netns runner: the lab in Linux network namespaces, with nftables firewalls between zones.

Layout (every name starts with the lab's prefix, :attr:`LabName.prefix`: ``es-`` for the default
lab, ``es<name>-`` for ``--name NAME``, so ``down`` finds a lab's leftovers by name after a crash
and never touches another lab's):

* ``es-sw``: one namespace holding a bridge per zone (``br0``, ``br1`` ... in topology order);
  nothing of the lab lives in the root namespace;
* ``es-<host>`` and ``es-<firewall>``: one namespace per host and per firewall, each interface a
  veth pair whose outer end is enslaved to its zone's bridge, named after the interface
  (``access``, ``wan`` ...) inside, with the topology's address;
* a zone on the user's own firewall (``external = true`` in the topology) has no bridge: each
  interface in it is a ``macvlan`` (bridge mode) on the link the topology names as the zone's
  ``parent``, so the zone's hosts share that link with the device and nothing else; no namespace
  is made for the external firewall itself;
* routes from :func:`simulator.lab.network.host_routes`; ``ip_forward`` on in firewall
  namespaces, whose rule files (``lab/firewall/*.nft``) are loaded with ``nft -f``, and off in
  hosts' (a new namespace copies the machine's);
* one background process per host with services:
  ``ip netns exec es-HOST python3 -m simulator lab serve --host HOST --runner netns``, its pid,
  log and ready file (bound listeners, JSON) under the lab's state directory
  (``/run/edgesim/<name>``), with ``rules.json`` naming the rule file each firewall loaded.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2 and nftables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import simulator
from simulator.errors import LabError
from simulator.firewall.rules import FirewallNode, load_rules
from simulator.lab.capture import (
    KEYLOG_ENV,
    CaptureResult,
    KeySource,
    packet_capture,
)
from simulator.lab.inspection import (
    CA_FILE,
    FIREWALL_LINK,
    MIDDLEBOX_LINK,
    InspectionPlan,
    firewall_commands,
    firewall_rules,
    inspection_plan,
    middlebox_commands,
    middlebox_rules,
)
from simulator.lab.network import ephemeral_port_range, host_routes, link_name
from simulator.lab.runners import register_runner
from simulator.lab.runners._exec import (
    RuleFiles,
    check_running_hosts,
    host_capture_points,
    listed_addresses,
)
from simulator.lab.runners.base import (
    DEFAULT_LAB,
    LabConfig,
    LabName,
    LabStatus,
    ListenerCheck,
    LoadResult,
    NodeStatus,
    Runner,
    Vantage,
    edgesim_argv,
    lab_firewall,
    services_of_ready,
)
from simulator.lab.system import pid_alive, root_tools_problem
from simulator.lab.topology import Firewall, Host, Interface
from simulator.matrix import load_matrix
from simulator.pki import LabPki, ensure_pki

log = logging.getLogger(__name__)

SWITCH = "sw"
"""The node name of the namespace holding the zones' bridges."""
COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def requirements_problem() -> str | None:
    """Why this machine cannot run the netns lab, or None."""
    return root_tools_problem("the netns runner")


def run(
    args: list[str],
    *,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
    stdin: str | None = None,
) -> str:
    """Run a command; a failure becomes a :class:`LabError` naming the command and its error."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=stdin)
    except FileNotFoundError:
        raise LabError(f"`{args[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def all_namespaces() -> list[str]:
    """Every network namespace with a name (``ip netns list``)."""
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def lab_namespaces(name: str = DEFAULT_LAB) -> list[str]:
    """The namespaces of lab ``name`` (running or left over)."""
    lab = LabName(name)
    return [n for n in all_namespaces() if lab.owns(n)]


def check_parent(parent: str) -> None:
    """A zone's ``parent`` link must exist in this namespace and must not be the link of this
    machine's default route (the lab's addresses would appear on the user's own network): a
    second NIC, a VLAN sub-interface, or a bridge or veth made for the lab. Brings it up."""
    shown = run(["ip", "-j", "link", "show", "dev", parent], check=False)
    if not shown.strip():
        raise LabError(
            f"parent link '{parent}' (an external firewall's zone) does not exist here: "
            "create it (a VLAN sub-interface, a bridge or a veth) or fix the topology"
        )
    for route in json.loads(run(["ip", "-j", "-4", "route", "show", "default"]) or "[]"):
        if route.get("dev") == parent:
            raise LabError(
                f"parent link '{parent}' carries this machine's default route: the lab would "
                "put its addresses on your own network; use a second NIC or a VLAN "
                "sub-interface (docs/lab.md)"
            )
    run(["ip", "link", "set", "dev", parent, "up"])


def package_env() -> dict[str, str]:
    """The environment for child processes: this very ``simulator`` package first on the path."""
    env = dict(os.environ)
    root = str(Path(simulator.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def compile_package(python: str) -> subprocess.Popen[bytes] | None:
    """Write this ``simulator`` package's bytecode beside its sources, as ``pip install`` does,
    in the background (``python -m compileall``: what is current is not compiled again).

    Only when the lab's processes inherit ``PYTHONDONTWRITEBYTECODE`` (containers and CI machines
    set it): each of them (a ``lab serve`` and a ``lab check-host`` per host, a ``probe --inside``
    per probe source) would otherwise compile the package from source on start, about 0.3 s of
    CPU each. None where the package cannot be written (an installed package has its bytecode).
    """
    root = Path(simulator.__file__).resolve().parent
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or not os.access(root, os.W_OK):
        return None
    return subprocess.Popen(
        [python, "-m", "compileall", "-q", str(root)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class HostProcess:
    host: str
    pid: int
    ready_file: Path
    log_file: Path


@register_runner
class NetnsRunner(Runner):
    """Build, start, check and tear down the lab in network namespaces."""

    name = "netns"
    summary = "network namespaces and nftables firewalls (root)"
    order = 10
    has_firewalls = True
    persistent = True
    shares_pki = True
    in_process = False
    addressing = "lab"
    node_kind = "namespace"
    inspects_tls = True

    def __init__(self, config: LabConfig, *, python: str = sys.executable) -> None:
        self.config = config
        self.topology = config.topology
        self.lab = config.lab
        self.certs_dir = Path(config.certs_dir).resolve()
        self.state_dir = Path(config.state)
        self.rules = RuleFiles(self.topology, self.state_dir, config.rules)
        self._python = python
        self.inspection = inspection_plan(self.topology) if config.inspect_tls else None
        """Where the TLS-inspecting middlebox goes (``--inspect-tls``), None without."""

    # ------------------------------------------------------------ names and paths
    @property
    def python(self) -> str:
        return self._python

    @property
    def node_certs(self) -> str:
        return str(self.certs_dir)

    @property
    def start_hint(self) -> str:
        return f"`sudo edgesim lab up --runner netns{self.lab.cli_args()}`"

    def namespace(self, node: str) -> str:
        """The network namespace of a host or firewall of this lab."""
        return self.lab.namespace(node)

    def namespaces(self) -> list[str]:
        """This lab's namespaces that exist now (running or left over)."""
        return lab_namespaces(self.lab.name)

    def problem(self) -> str | None:
        return requirements_problem()

    def exec_argv(self, node: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(node)]

    def exec_env(self) -> dict[str, str] | None:
        return package_env()

    def edgesim_argv(self, node: str) -> list[str]:
        return edgesim_argv(self, node, str(self.topology.path))

    def _zone_bridge(self, zone_id: str) -> str:
        index = [z.id for z in self.topology.zones].index(zone_id)
        return f"br{index}"

    def _nodes(self) -> list[tuple[str, str, tuple[Interface, ...]]]:
        nodes: list[tuple[str, str, tuple[Interface, ...]]] = [
            (fw.id, "firewall", fw.interfaces) for fw in self.topology.lab_firewalls
        ]
        nodes += [(h.id, "host", h.interfaces) for h in self.topology.hosts]
        return nodes

    def _firewall(self, firewall: str) -> Firewall:
        return lab_firewall(self.topology, firewall)

    def our_firewalls(self) -> tuple[str, ...]:
        return tuple(fw.id for fw in self.topology.lab_firewalls)

    def rules_path(self, firewall: str) -> Path:
        """The rule file loaded into a firewall: an override given to this runner, the one the
        running lab loaded last (``rules.json`` in the state directory), else the topology's."""
        return self.rules.path(firewall)

    def firewall_node(self, firewall: str) -> FirewallNode:
        self._firewall(firewall)
        return FirewallNode(firewall, tuple(self.exec_argv(firewall)))

    def load_rules(self, firewall: str, path: Path | None = None) -> LoadResult:
        """The file (nftables or iptables-save) checked, then loaded in place of the firewall's
        rules (:func:`simulator.firewall.rules.load_rules`); a refused file changes nothing."""
        self._firewall(firewall)
        path = Path(path).resolve() if path is not None else self.rules.topology_rules(firewall)
        ns = self.namespace(firewall)
        if ns not in self.namespaces():
            raise LabError(f"namespace {ns} does not exist: is the netns lab up? {self.start_hint}")
        index = load_rules(self.firewall_node(firewall), path)
        self.rules.record(firewall, path)
        return LoadResult(firewall, path, "; ".join(index.unmapped))

    # ------------------------------------------------------------ network
    def build_network(self) -> None:
        problem = requirements_problem()
        if problem:
            raise LabError(problem)
        leftovers = self.namespaces()
        if leftovers:
            raise LabError(
                f"lab namespaces already exist ({', '.join(leftovers[:4])}"
                f"{' ...' if len(leftovers) > 4 else ''}): "
                f"`edgesim lab down --runner netns{self.lab.cli_args()}` first"
            )
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise

    def _build(self) -> None:
        parents = {z.id: p for z in self.topology.zones if (p := self.topology.zone_parent(z.id))}
        for parent in sorted(set(parents.values())):
            check_parent(parent)
        switch = self.namespace(SWITCH)
        run(["ip", "netns", "add", switch])
        run(["ip", "-n", switch, "link", "set", "lo", "up"])
        for zone in self.topology.zones:
            if zone.id in parents:
                continue  # the user's link is the zone's network
            bridge = self._zone_bridge(zone.id)
            run(["ip", "-n", switch, "link", "add", bridge, "type", "bridge"])
            run(["ip", "-n", switch, "link", "set", bridge, "up"])
        for index, (node, kind, interfaces) in enumerate(self._nodes()):
            ns = self.namespace(node)
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            for j, iface in enumerate(interfaces):
                # Link names live in the lab's own namespaces: short, and the same in every lab.
                outer = f"n{index}i{j}"
                inner = link_name(iface)
                prefix = self.topology.zone(iface.zone).subnet.prefixlen
                if iface.zone in parents:
                    # A macvlan on the user's link, made in this namespace and moved at once.
                    run(["ip", "link", "add", "link", parents[iface.zone], "name", inner,
                         "netns", ns, "type", "macvlan", "mode", "bridge"])  # fmt: skip
                else:
                    run(["ip", "-n", switch, "link", "add", outer, "type", "veth",
                         "peer", "name", inner, "netns", ns])  # fmt: skip
                    bridge = self._zone_bridge(iface.zone)
                    run(["ip", "-n", switch, "link", "set", outer, "master", bridge, "up"])
                run(["ip", "-n", ns, "addr", "add", f"{iface.address}/{prefix}", "dev", inner])
                run(["ip", "-n", ns, "link", "set", inner, "up"])
            # A new namespace copies ip_forward from the machine's (1 where Docker runs): set
            # it both ways, so only firewalls route and no host passes packets around them.
            self._sysctl(node, "net.ipv4.ip_forward", "1" if kind == "firewall" else "0")
            if kind != "firewall":
                # Several addresses on one host and zone (the Edge's access and av): each
                # interface answers ARP only for its own address.
                self._sysctl(node, "net.ipv4.conf.all.arp_ignore", "1")
                self._sysctl(node, "net.ipv4.conf.all.arp_announce", "2")
                eph_low, eph_high = ephemeral_port_range(load_matrix())
                self._sysctl(node, "net.ipv4.ip_local_port_range", f"{eph_low} {eph_high}")
                for route in host_routes(self.topology, self.topology.host(node)):
                    run(["ip", "-n", ns, *route.ip_args()])
        self.rules.forget()
        for fw in self.topology.lab_firewalls:
            self.load_rules(fw.id, self.rules.overrides.get(fw.id))
        if self.inspection is not None:
            self._build_inspection(self.inspection)

    def _build_inspection(self, plan: InspectionPlan) -> None:
        """The middlebox's namespace, its link to the firewall, the diversion rules
        (:mod:`simulator.lab.inspection`)."""
        fw_ns, box_ns = self.namespace(plan.firewall), self.namespace(plan.node)
        run(["ip", "netns", "add", box_ns])
        run(["ip", "-n", fw_ns, "link", "add", FIREWALL_LINK, "type", "veth",
             "peer", "name", MIDDLEBOX_LINK, "netns", box_ns])  # fmt: skip
        for cmd in firewall_commands(plan):
            run([*self.exec_argv(plan.firewall), *cmd])
        for cmd in middlebox_commands(plan):
            run([*self.exec_argv(plan.node), *cmd])
        run([*self.exec_argv(plan.firewall), "nft", "-f", "-"], stdin=firewall_rules(plan))
        run([*self.exec_argv(plan.node), "nft", "-f", "-"], stdin=middlebox_rules(plan))

    def _sysctl(self, node: str, key: str, value: str) -> None:
        run([*self.exec_argv(node), "sysctl", "-q", "-w", f"{key}={value}"])

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
                    [*self.edgesim_argv(host.id), "lab", "serve", "--host", host.id,
                     "--runner", self.name, "--certs", self.node_certs,
                     "--ready-file", str(ready)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**package_env(), KEYLOG_ENV: str(self._keylog(host.id))},
                    start_new_session=True,
                )  # fmt: skip
            hp = HostProcess(host.id, proc.pid, ready, log_file)
            (self.state_dir / f"{host.id}.pid").write_text(f"{proc.pid}\n")
            procs.append((hp, proc))
        if self.inspection is not None:
            procs.append(self._start_middlebox(self.inspection))
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

    @property
    def inspection_ca(self) -> Path:
        """The running middlebox's CA certificate (``--inspect-tls``)."""
        return self.state_dir / CA_FILE

    def _start_middlebox(self, plan: InspectionPlan) -> tuple[HostProcess, subprocess.Popen[bytes]]:
        """``lab middlebox`` in its namespace; its CA is made there, per run."""
        ready = self.state_dir / f"{plan.node}.json"
        log_file = self.state_dir / f"{plan.node}.log"
        ready.unlink(missing_ok=True)
        self.inspection_ca.unlink(missing_ok=True)
        trust = LabPki(self.certs_dir).trust_bundle
        with open(log_file, "wb") as out:
            proc = subprocess.Popen(
                [*self.edgesim_argv(plan.node), "lab", "middlebox",
                 "--state", str(self.state_dir / f"{plan.node}.d"),
                 "--ca-out", str(self.inspection_ca), "--trust", str(trust),
                 "--ready-file", str(ready)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=package_env(),
                start_new_session=True,
            )  # fmt: skip
        (self.state_dir / f"{plan.node}.pid").write_text(f"{proc.pid}\n")
        return HostProcess(plan.node, proc.pid, ready, log_file), proc

    def notices(self) -> list[str]:
        """SSL inspection is on (``--inspect-tls`` now, or the running lab was started so)."""
        plan = self.inspection
        if plan is None and self.inspection_ca.is_file():
            with contextlib.suppress(LabError):
                plan = inspection_plan(self.topology)
        if plan is None:
            return []
        return [f"SSL inspection: {plan.describe()}; its CA: {self.inspection_ca}"]

    def bring_up(self, timeout: float = READY_TIMEOUT) -> list[HostProcess]:
        """:meth:`up` without an event loop; returns the hosts' service processes."""
        compiling = compile_package(self.python)  # meanwhile: the network
        try:
            self.build_network()  # tears down what it built when it fails
            try:
                if compiling is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        compiling.wait(COMMAND_TIMEOUT)  # failing only costs what it saves
                return self.start_services(timeout)
            except BaseException:
                self.teardown()
                raise
        finally:
            if compiling is not None and compiling.poll() is None:
                compiling.kill()
                compiling.wait()

    async def up(self) -> None:
        await asyncio.to_thread(self.bring_up)

    # ------------------------------------------------------------ teardown
    def _our_pids(self) -> set[int]:
        pids: set[int] = set()
        if self.state_dir.is_dir():
            for pid_file in self.state_dir.glob("*.pid"):
                with contextlib.suppress(ValueError, OSError):
                    pid = int(pid_file.read_text().strip())
                    if _is_lab_serve(pid):
                        pids.add(pid)
        for ns in self.namespaces():
            out = run(["ip", "netns", "pids", ns], check=False)
            pids.update(int(p) for p in out.split() if p.isdigit())
        pids.discard(os.getpid())
        return pids

    def teardown(self) -> list[str]:
        """:meth:`down` without an event loop."""
        pids = self._our_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pids and time.monotonic() < deadline:
            for pid in pids:  # our own children (the lab was started by this process): reap
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            pids = {p for p in pids if pid_alive(p)}
            if pids:
                time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deleted: list[str] = []
        for ns in self.namespaces():
            run(["ip", "netns", "del", ns], check=False)
            deleted.append(ns)
        if self.state_dir.is_dir():
            for pattern in ("*.pid", "*.json", "*.log", CA_FILE, "*.d/leaf-*"):
                for path in self.state_dir.glob(pattern):
                    path.unlink(missing_ok=True)
        remaining = self.namespaces()
        if remaining:
            raise LabError(f"could not delete namespaces: {', '.join(remaining)}")
        return deleted

    async def down(self) -> list[str]:
        """Stop every process of this lab and delete its namespaces; idempotent, also after a
        crash (found by name). Returns the namespaces deleted."""
        return await asyncio.to_thread(self.teardown)

    def require_up(self) -> None:
        problem = requirements_problem()
        if problem is not None:
            raise LabError(f"--runner netns: {problem}")
        present = set(self.namespaces())
        hosts = [h.id for h in self.topology.hosts]
        missing = [h for h in hosts if self.namespace(h) not in present]
        if len(missing) == len(hosts):
            named = "" if self.lab.is_default else f" named {self.lab.name}"
            raise LabError(f"no netns lab is up{named}: start it with {self.start_hint}")
        if missing:
            raise LabError(
                f"the running netns lab lacks {', '.join(self.namespace(m) for m in missing)}: "
                "was it started with another topology?"
            )

    # ------------------------------------------------------------ status
    def _ready(self, node: str) -> dict[str, object] | None:
        with contextlib.suppress(ValueError, OSError):
            ready = json.loads((self.state_dir / f"{node}.json").read_text())
            return ready if isinstance(ready, dict) else None
        return None

    def snapshot(self) -> LabStatus:
        """:meth:`status` without an event loop."""
        present = set(self.namespaces())
        status = LabStatus(self.name, self.lab.name, self.node_kind)
        for node, kind, interfaces in self._nodes():
            ns = self.namespace(node)
            st = NodeStatus(node, "host" if kind == "host" else "firewall", ns, "absent")
            if ns in present:
                out = run(["ip", "-n", ns, "-4", "-o", "addr", "show"], check=False)
                st.addresses = listed_addresses(out)
            else:
                st.addresses = [f"{i.address} ({link_name(i)}, absent)" for i in interfaces]
            pid_file = self.state_dir / f"{node}.pid"
            if pid_file.is_file():
                with contextlib.suppress(ValueError, OSError):
                    st.pid = int(pid_file.read_text().strip())
            ready = self._ready(node)
            if ready is not None:
                st.services = services_of_ready(node, ready)
            if ns not in present:
                st.state = "absent"
            elif kind == "firewall":
                st.state = "routing"
            elif st.pid is not None:
                st.state = "running" if pid_alive(st.pid) else "exited"
            else:
                st.state = "up"
            status.nodes.append(st)
        return status

    async def status(self) -> LabStatus:
        return await asyncio.to_thread(self.snapshot)

    async def check(self) -> list[ListenerCheck]:
        """``lab check-host`` inside every running host's namespace, all at once."""
        return await check_running_hosts(self, lambda host: str(self.state_dir / f"{host}.json"))

    async def vantage(self) -> Vantage:
        self.require_up()
        nodes = [node for node, _, _ in self._nodes()]
        return Vantage(self.name, LabPki(self.certs_dir), {n: self.namespace(n) for n in nodes})

    def prepare_host(self, host: Host) -> None:
        return None

    def _keylog(self, host: str) -> Path:
        """The TLS key log of ``host``'s ``lab serve`` (captures embed it)."""
        return self.state_dir / f"{host}.tls-keys"

    def capture(self, out: Path) -> AbstractAsyncContextManager[CaptureResult]:
        """tcpdump in every host's namespace (what each host sends: every packet once, also
        those a firewall then drops), with the hosts' TLS key logs."""
        self.require_up()
        keys = [KeySource((), str(self._keylog(h.id))) for h in self._service_hosts()]
        return packet_capture(out, host_capture_points(self), keys)


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
