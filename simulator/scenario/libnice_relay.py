"""Two libnice agents in [MS-TURN] mode relaying media to each other through the A/V Edge.

A real Lync-dialect TURN client: libnice (Debian ``gir1.2-nice-0.1``) in its
``Nice.Compatibility.OC2007R2`` mode allocates with [MS-TURN] (Magic Cookie attribute, 16-byte
transaction ids, Send requests, Data Indications, Set Active Destination; over TCP the section
2.1.4 framing, with ``tls`` the pseudo-TLS exchange of section 2.1.1). Both agents use only their
relayed candidates (``force-relay``), so every packet crosses the Edge's relay twice.

libnice loads through GObject introspection, which Debian's ``/usr/bin/python3`` has and the
project's Python may not, so this file is a standalone script (standard library and ``gi``
only), run as a separate process::

    /usr/bin/python3 libnice_relay.py --server 192.0.2.20 --port 3478 \\
        --transport-a udp --transport-b tls --username B64 --password B64 --packets 20

It prints one JSON object: each agent's relayed candidate and final state, the selected pair,
and how many of the packets each side received. Exit status 0 when media flowed both ways.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the A/V Edge's address")
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--tcp-port", type=int, default=443, help="port for tcp/tls relays")
    parser.add_argument("--transport-a", choices=("udp", "tcp", "tls"), default="udp")
    parser.add_argument("--transport-b", choices=("udp", "tcp", "tls"), default="udp")
    parser.add_argument("--username", required=True, help="base64, as the MRAS hands it out")
    parser.add_argument("--password", required=True, help="base64, as the MRAS hands it out")
    parser.add_argument("--local", default=None, help="local address to gather on")
    parser.add_argument("--packets", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    result = run(args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    import gi

    gi.require_version("Nice", "0.1")
    from gi.repository import GLib, Nice

    loop = GLib.MainLoop()
    context = loop.get_context()
    relay_types = {
        "udp": Nice.RelayType.UDP,
        "tcp": Nice.RelayType.TCP,
        "tls": Nice.RelayType.TLS,
    }
    result: dict[str, Any] = {"ok": False, "agents": {}, "received": {"a": 0, "b": 0}}
    agents: dict[str, Any] = {}
    streams: dict[str, int] = {}
    gathered: set[str] = set()
    ready: set[str] = set()
    sent = {"a": 0, "b": 0}

    def make(name: str, controlling: bool, transport: str) -> None:
        agent = Nice.Agent.new(context, Nice.Compatibility.OC2007R2)
        agent.set_property("controlling-mode", controlling)
        agent.set_property("force-relay", True)
        agent.set_property("ice-tcp", False)
        # No UPnP IGD discovery (SSDP multicast, on by default where libnice has it): a Lync
        # client behind the lab's firewalls has no gateway to ask, and gathering would wait on it.
        agent.set_property("upnp", False)
        if args.local:
            address = Nice.Address.new()
            address.set_from_string(args.local)
            agent.add_local_address(address)
        stream = agent.add_stream(1)
        port = args.port if transport == "udp" else args.tcp_port
        agent.set_relay_info(
            stream, 1, args.server, port, args.username, args.password, relay_types[transport]
        )
        agent.connect("candidate-gathering-done", on_gathered, name)
        agent.connect("component-state-changed", on_state, name)
        agent.connect("new-selected-pair-full", on_selected, name)
        agents[name], streams[name] = agent, stream
        result["agents"][name] = {"transport": transport, "state": "new", "relayed": None}

    def other(name: str) -> str:
        return "b" if name == "a" else "a"

    def on_gathered(agent: Any, stream: int, name: str) -> None:
        gathered.add(name)
        relayed = [
            c for c in agent.get_local_candidates(stream, 1) if c.type == Nice.CandidateType.RELAYED
        ]
        if relayed:
            addr = relayed[0].addr
            result["agents"][name]["relayed"] = f"{addr.dup_string()}:{addr.get_port()}"
        if gathered == {"a", "b"}:
            for side in ("a", "b"):
                peer = other(side)
                _ok, ufrag, pwd = agents[side].get_local_credentials(streams[side])
                agents[peer].set_remote_credentials(streams[peer], ufrag, pwd)
            for side in ("a", "b"):
                peer = other(side)
                cands = agents[side].get_local_candidates(streams[side], 1)
                agents[peer].set_remote_candidates(streams[peer], 1, cands)

    def on_state(agent: Any, stream: int, component: int, state: int, name: str) -> None:
        result["agents"][name]["state"] = Nice.component_state_to_string(state)
        if state == Nice.ComponentState.FAILED:
            loop.quit()
        if state == Nice.ComponentState.READY and name not in ready:
            ready.add(name)
            GLib.timeout_add(50, send_tick, name)

    def on_selected(
        agent: Any, stream: int, component: int, local: Any, remote: Any, name: str
    ) -> None:
        result["agents"][name]["selected"] = [
            f"{c.addr.dup_string()}:{c.addr.get_port()}" for c in (local, remote)
        ]

    def send_tick(name: str) -> bool:
        if sent[name] >= args.packets:
            return False
        sent[name] += 1
        payload = f"media {name} {sent[name]}".encode()
        agents[name].send(streams[name], 1, len(payload), payload.decode())
        return True

    def on_receive(name: str, raw: bytes) -> None:
        if raw.startswith(f"media {other(name)} ".encode()):
            result["received"][name] += 1
        if all(result["received"][n] >= args.packets for n in ("a", "b")):
            loop.quit()

    make("a", True, args.transport_a)
    make("b", False, args.transport_b)
    keep = [attach_recv(agents[name], streams[name], name, on_receive) for name in ("a", "b")]
    for name in ("a", "b"):
        agents[name].gather_candidates(streams[name])
    GLib.timeout_add(int(args.timeout * 1000), loop.quit)
    loop.run()
    del keep
    result["ok"] = all(result["received"][n] > 0 for n in ("a", "b"))
    for agent in agents.values():
        agent.close_async(None, None)
    return result


def attach_recv(agent: Any, stream: int, name: str, callback: Any) -> Any:
    """``nice_agent_attach_recv`` through ctypes: GObject introspection skips it (its callback
    takes a buffer and a length), and polling ``recv_nonblocking`` through introspection
    passes a garbage buffer length. The returned object keeps the C callback alive."""
    import ctypes

    nice = ctypes.CDLL("libnice.so.10")
    glib = ctypes.CDLL("libglib-2.0.so.0")
    glib.g_main_context_default.restype = ctypes.c_void_p
    getpointer = ctypes.pythonapi.PyCapsule_GetPointer
    getpointer.restype = ctypes.c_void_p
    getpointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    recv_func = ctypes.CFUNCTYPE(
        None,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_char),
        ctypes.c_void_p,
    )

    def on_data(
        _agent: Any, _stream: int, _component: int, size: int, buf: Any, _data: Any
    ) -> None:
        callback(name, ctypes.string_at(buf, size))

    c_callback = recv_func(on_data)
    nice.nice_agent_attach_recv.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        recv_func,
        ctypes.c_void_p,
    ]
    pointer = getpointer(agent.__gpointer__, None)
    nice.nice_agent_attach_recv(pointer, stream, 1, glib.g_main_context_default(), c_callback, None)
    return c_callback


if __name__ == "__main__":
    sys.exit(main())
