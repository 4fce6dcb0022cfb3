"""Per-lab secrets: user passwords, the A/V Edge's credential secret, dialback secrets.

No secret that works on a lab ships in the source. The topology names the users
(``users = ["alice", "bob"]``) and leaves shared secrets out; the first time a lab needs one,
it is generated here (:func:`secrets.token_urlsafe`) and kept beside the lab PKI in
``secrets.json`` (mode 0600), so every process of one lab (the netns hosts, the compose
containers built from one image, the probes and scenarios) sees the same values, and two labs
never share one. ``edgesim secrets`` shows them when a user needs one (for a real client such
as SIPE, or coturn's ``turnutils_uclient``).

A topology may still give a password explicitly (``users = { alice = "..." }``) where a user
wants a known one; :func:`service_settings` keeps it as written.

Names in the store: ``<service>/users/<user>`` for passwords, ``<service>/<key>`` for the keys of
:data:`GENERATED`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simulator.errors import ConfigError, EdgesimError
from simulator.lab.topology import Topology

SECRETS_FILE = "secrets.json"

#: Settings keys that hold a secret, per service: generated when the topology leaves them out.
GENERATED: dict[str, tuple[str, ...]] = {
    "av-edge": ("shared_secret",),
    "xmpp-proxy": ("dialback_secret",),
    "xmpp-partner": ("dialback_secret",),
}

#: Services whose ``users`` table holds passwords.
USER_SERVICES = ("front-end", "partner-edge", "pic", "xmpp-partner", "av-edge")


class LabSecrets:
    """The secrets of one lab, in ``<directory>/secrets.json``; created on first use."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SECRETS_FILE
        self._cache: dict[str, str] | None = None

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise EdgesimError(f"cannot read the lab's secrets {self.path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise EdgesimError(f"{self.path} is not a table of secrets (delete it to start anew)")
        return {str(k): v for k, v in data.items()}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".secrets.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def get(self, name: str) -> str:
        """The secret called ``name``, generated (and stored) the first time it is asked for."""
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        known = self._read()
        if name not in known:
            try:
                with self._locked():
                    known = self._read()  # another process may have written it meanwhile
                    if name not in known:
                        known[name] = secrets.token_urlsafe(18)
                        self._write(known)
            except OSError as exc:
                raise EdgesimError(
                    f"cannot store the lab's secrets in {self.path}: {exc.strerror or exc}"
                ) from None
        self._cache = known
        return known[name]

    def _write(self, data: dict[str, str]) -> None:
        tmp = self.path.with_name(f".{SECRETS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, self.path)

    def all(self) -> dict[str, str]:
        """Every secret generated so far."""
        return dict(sorted(self._read().items()))


def _users(raw: Any, service: str, store: LabSecrets, topology: Topology) -> dict[str, str]:
    entry = f"services.{service}.users"
    if isinstance(raw, list) and all(isinstance(u, str) for u in raw):
        return {u: store.get(f"{service}/users/{u}") for u in raw}
    if isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
        return {str(k): v for k, v in raw.items()}
    raise ConfigError(
        topology.path, entry, 'must be a list of user names, or a table of name = "password"'
    )


def service_settings(topology: Topology, service: str, directory: Path | str) -> dict[str, Any]:
    """``[services.<service>]`` with its credentials filled in from the lab's secrets.

    ``directory`` is the lab PKI directory (the secrets live beside the certificates).
    """
    store = LabSecrets(directory)
    settings = dict(topology.settings.get(service, {}))
    if service in USER_SERVICES and "users" in settings:
        settings["users"] = _users(settings["users"], service, store, topology)
    for key in GENERATED.get(service, ()):
        if key not in settings:
            settings[key] = store.get(f"{service}/{key}")
    return settings


def user_password(topology: Topology, user: str, directory: Path | str) -> str | None:
    """``user@domain``'s password: from the ``users`` of a service on a host of that domain
    (``[services.front-end]`` for contoso.lab, ``partner-edge`` for fabrikam.lab ...)."""
    name, _, domain = user.partition("@")
    for host in topology.hosts:
        if host.domain != domain:
            continue
        for service in host.services:
            if service not in USER_SERVICES:
                continue
            users = service_settings(topology, service, directory).get("users")
            if isinstance(users, dict) and name in users:
                return str(users[name])
    return None


def lab_credentials(topology: Topology, directory: Path | str) -> list[tuple[str, str, str]]:
    """Every credential of the lab: ``(service, name, secret)``, users first."""
    rows: list[tuple[str, str, str]] = []
    running = {name for host in topology.hosts for name in host.services}
    for service in dict.fromkeys([*topology.settings, *(s for s in GENERATED if s in running)]):
        settings = service_settings(topology, service, directory)
        users = settings.get("users") if service in USER_SERVICES else None
        if isinstance(users, dict):
            rows += [(service, f"user {name}", pw) for name, pw in users.items()]
        rows += [(service, key, str(settings[key])) for key in GENERATED.get(service, ())]
    return rows
