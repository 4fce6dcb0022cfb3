"""Prosody configuration for the lab's jabber.lab server (a real XMPP peer).

:func:`render` writes a runnable Prosody setup into a directory: the configuration from
``jabber.cfg.lua``, the jabber.lab certificate and key, and the lab trust bundle, owned by the
``prosody`` user so that ``runuser -u prosody -- prosody -F --config DIR/prosody.cfg.lua`` can
read them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from simulator.pki import CertPaths
from simulator.xmpp import peer_setup
from simulator.xmpp.peer_setup import hand_over


@dataclass(frozen=True)
class ProsodySetup:
    directory: Path
    address: str
    c2s_port: int
    s2s_port: int
    dns: tuple[str, int]
    """The lab DNS that serves the SRV and A records Prosody needs."""
    secure_auth: bool = False
    """``s2s_secure_auth``: certificates only (SASL EXTERNAL)."""
    dialback: bool = True
    """False adds ``dialback`` to ``modules_disabled``."""
    log_level: str = "info"

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"


def render(setup: ProsodySetup, cert: CertPaths, trust: Path, user: str = "prosody") -> Path:
    """Write the configuration and key material; returns the configuration path."""
    directory = setup.directory
    (directory / "data").mkdir(parents=True, exist_ok=True)
    template = Template(resources.files(__package__).joinpath("jabber.cfg.lua").read_text())
    text = template.substitute(
        dir=str(directory),
        address=setup.address,
        c2s_port=setup.c2s_port,
        s2s_port=setup.s2s_port,
        dns=f"{setup.dns[0]}@{setup.dns[1]}",
        modules_disabled="" if setup.dialback else '"dialback";',
        secure_auth="true" if setup.secure_auth else "false",
        log_level=setup.log_level,
    )
    setup.config.write_text(text)
    shutil.copyfile(cert.cert, directory / "jabber.crt")
    shutil.copyfile(cert.key, directory / "jabber.key")
    shutil.copyfile(trust, directory / "lab-trust.pem")
    hand_over(directory, user)
    return setup.config


def missing() -> str | None:
    """Why Prosody cannot run here as its own user (``runuser -u prosody``), or None."""
    not_installed = "Prosody is not installed (scripts/setup.sh --test)"
    return peer_setup.missing(
        "prosody",
        {"prosody": not_installed, "runuser": not_installed},
        "Prosody runs as its own user (runuser): needs root",
    )
