"""ejabberd as the lab's jabber.lab server (Debian ``ejabberd`` 23.01, a real XMPP peer).

:func:`render` writes a runnable setup into a directory: ``ejabberd.yml`` from ``jabber.yml``,
the jabber.lab certificate and key in one PEM, the lab trust bundle, an ``ejabberdctl.cfg`` and
an ``inetrc`` that sends ejabberd's own DNS lookups (SRV ``_xmpp-server._tcp``) to the lab DNS,
and the ``hosts`` file of lab names that :func:`command` bind-mounts over ``/etc/hosts`` in a
private mount namespace. The three traps of ejabberd on this machine (docs/xmpp.md): a leaf
valid until the year 3000 crashes its expiry timer (the lab PKI issues ordinary validity);
``{resolv_conf, ""}`` must come before ``{nameserver, ...}`` in ``inetrc``; it resolves an SRV
target's address with the system resolver, hence the private ``/etc/hosts``.

The node runs without epmd (``ERL_DIST_PORT``), as the ``ejabberd`` user, in the foreground:
the caller owns the process (and its process group) and ends it.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

from simulator.pki import CertPaths
from simulator.xmpp import peer_setup
from simulator.xmpp.peer_setup import hand_over

EJABBERDCTL = "/usr/sbin/ejabberdctl"


@dataclass(frozen=True)
class EjabberdSetup:
    directory: Path
    address: str
    c2s_port: int
    s2s_port: int
    dns: tuple[str, int]
    """The lab DNS that serves the SRV records ejabberd looks up."""
    dist_port: int
    """Erlang distribution port on 127.0.0.1 (ejabberdctl reaches the node there, no epmd)."""
    hosts: dict[str, str] = field(default_factory=dict)
    """Name -> address of the lab names ejabberd resolves with the system resolver (the
    targets of the SRV records it follows, e.g. ``xmpp.contoso.lab``)."""
    dialback: bool = True
    """False leaves out mod_s2s_dialback: certificates only (SASL EXTERNAL)."""
    node: str = "edgesim-jabber@localhost"
    log_level: str = "info"

    @property
    def config(self) -> Path:
        return self.directory / "ejabberd.yml"

    @property
    def ctl_config(self) -> Path:
        return self.directory / "ejabberdctl.cfg"


def _erlang_ip(address: str) -> str:
    return "{" + ",".join(str(b) for b in ipaddress.IPv4Address(address).packed) + "}"


def render(setup: EjabberdSetup, cert: CertPaths, trust: Path, user: str = "ejabberd") -> Path:
    """Write the configuration and key material (owned by ``user``); returns the config path."""
    directory = setup.directory
    for sub in ("db", "logs"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    template = Template(resources.files(__package__).joinpath("jabber.yml").read_text())
    setup.config.write_text(
        template.substitute(
            dir=str(directory),
            address=setup.address,
            c2s_port=setup.c2s_port,
            s2s_port=setup.s2s_port,
            log_level=setup.log_level,
            dialback="  mod_s2s_dialback: {}" if setup.dialback else "",
        )
    )
    (directory / "jabber.pem").write_text(cert.cert.read_text() + cert.key.read_text())
    shutil.copyfile(trust, directory / "lab-trust.pem")
    dns_ip, dns_port = setup.dns
    (directory / "inetrc").write_text(
        '{resolv_conf, ""}.\n'  # before the nameserver, or the nameserver is dropped
        f"{{nameserver, {_erlang_ip(dns_ip)}, {dns_port}}}.\n"
        "{lookup, [file, dns]}.\n"
    )
    (directory / "hosts").write_text(
        "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in sorted(setup.hosts.items()))
    )
    setup.ctl_config.write_text(
        f'ERL_DIST_PORT={setup.dist_port}\nERL_INETRC="{directory / "inetrc"}"\n'
        f'EJABBERD_PID_PATH="{directory / "ejabberd.pid"}"\n'
        'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n'
    )
    hand_over(directory, user, private=("jabber.pem",))
    return setup.config


def ctl(setup: EjabberdSetup, *args: str) -> list[str]:
    """An ``ejabberdctl`` command line for this node (``register``, ``started``, ...)."""
    return [
        EJABBERDCTL,
        "--config-dir", str(setup.directory),
        "--config", str(setup.config),
        "--ctl-config", str(setup.ctl_config),
        "--logs", str(setup.directory / "logs"),
        "--spool", str(setup.directory / "db"),
        "--node", setup.node,
        *args,
    ]  # fmt: skip


def command(setup: EjabberdSetup) -> list[str]:
    """The node in the foreground, in a private mount namespace whose ``/etc/hosts`` is the
    setup's (trap 3)."""
    script = f"mount --bind {setup.directory / 'hosts'} /etc/hosts && exec " + " ".join(
        f"'{part}'" for part in ctl(setup, "foreground")
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def missing() -> str | None:
    """Why ejabberd cannot run here, or None."""
    return peer_setup.missing(
        "ejabberd",
        {
            EJABBERDCTL: "ejabberd is not installed (Debian ejabberd; scripts/setup.sh --test)",
            "unshare": "unshare (util-linux) is not installed",
        },
        "ejabberd runs as its own user in a private mount namespace: needs root",
    )


__all__ = ["EjabberdSetup", "command", "ctl", "missing", "render"]
