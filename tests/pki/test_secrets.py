"""Per-lab secrets: generated once, private, shared by every process of one lab, never shipped."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.errors import ConfigError, EdgesimError
from simulator.lab.topology import Topology, default_topology_path, load_topology
from simulator.pki import LabSecrets, ensure_pki, lab_credentials, service_settings, user_password

SECRET_KEYS = ("password", "secret", "shared_secret", "dialback_secret", "turn_password")


def test_the_shipped_topology_holds_no_password_or_secret(topology: Topology) -> None:
    for service, settings in topology.settings.items():
        users = settings.get("users", [])
        assert isinstance(users, list), f"[services.{service}] users carries passwords"
        assert not set(settings) & set(SECRET_KEYS), f"[services.{service}] ships a secret"


def test_a_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    store = LabSecrets(tmp_path)
    first = store.get("av-edge/shared_secret")
    assert len(first) >= 24
    assert LabSecrets(tmp_path).get("av-edge/shared_secret") == first  # another process
    assert LabSecrets(tmp_path / "other-lab").get("av-edge/shared_secret") != first
    mode = stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode)
    assert mode == 0o600


def test_concurrent_processes_agree_on_one_secret(tmp_path: Path) -> None:
    code = (
        "import sys; from simulator.pki import LabSecrets; "
        "print(LabSecrets(sys.argv[1]).get('front-end/users/alice'))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    outputs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(outputs) == 1 and "" not in outputs


def test_services_get_their_credentials_filled_in(topology: Topology, tmp_path: Path) -> None:
    fe = service_settings(topology, "front-end", tmp_path)
    av = service_settings(topology, "av-edge", tmp_path)
    assert set(fe["users"]) == {"alice", "bob"}
    # the Front End's MRAS signs relay credentials with the A/V Edge's own secret
    assert fe["shared_secret"] == av["shared_secret"]
    assert (
        service_settings(topology, "xmpp-proxy", tmp_path)["dialback_secret"]
        != (service_settings(topology, "xmpp-partner", tmp_path)["dialback_secret"])
    )
    assert user_password(topology, "alice@contoso.lab", tmp_path) == fe["users"]["alice"]
    assert user_password(topology, "carol@fabrikam.lab", tmp_path) is not None
    assert user_password(topology, "nobody@contoso.lab", tmp_path) is None


def test_a_password_the_user_gives_is_kept(tmp_path: Path) -> None:
    text = (
        default_topology_path()
        .read_text()
        .replace('users = ["carol"]', 'users = { carol = "my-own" }')
    )
    (tmp_path / "t.toml").write_text(text)
    topo = load_topology(tmp_path / "t.toml")
    assert user_password(topo, "carol@fabrikam.lab", tmp_path) == "my-own"


def test_bad_users_name_the_entry(tmp_path: Path) -> None:
    text = default_topology_path().read_text().replace('users = ["carol"]', "users = 3")
    (tmp_path / "t.toml").write_text(text)
    topo = load_topology(tmp_path / "t.toml")
    with pytest.raises(ConfigError, match=r"t.toml: services.partner-edge.users: must be a list"):
        service_settings(topo, "partner-edge", tmp_path)


def test_a_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text("[1, 2]")
    with pytest.raises(EdgesimError, match="is not a table of secrets"):
        LabSecrets(tmp_path).get("x")


def test_the_pki_generates_every_secret_up_front(topology: Topology, tmp_path: Path) -> None:
    """A compose image issues its PKI at build time: every container must see one set."""
    ensure_pki(topology, tmp_path)
    stored = json.loads((tmp_path / "secrets.json").read_text())
    names = {f"{svc}/{what}" for svc, what, _ in lab_credentials(topology, tmp_path)}
    assert len(stored) == len(names) >= 10
    assert "av-edge/shared_secret" in stored and "front-end/users/alice" in stored


def test_no_dialback_key_can_be_computed_from_the_host_and_service_names(
    topology: Topology, tmp_path: Path
) -> None:
    """Issue 12, High 4: the dialback secret once defaulted to "<host>-<service>-dialback"."""
    from simulator.xmpp.s2s import SessionConfig, dialback_key

    guessed = [f"{h.id}-{s}-dialback" for h in topology.hosts for s in h.services] + ["edgesim"]
    for service in ("xmpp-proxy", "xmpp-partner"):
        secret = service_settings(topology, service, tmp_path)["dialback_secret"]
        assert secret not in guessed and len(secret) >= 24
    # the core without a secret computes no key that any peer could also compute
    assert SessionConfig(local_domains=frozenset({"contoso.lab"})).dialback_secret == b""
    assert dialback_key(b"", "jabber.lab", "contoso.lab", "id") != dialback_key(
        b"x", "jabber.lab", "contoso.lab", "id"
    )
