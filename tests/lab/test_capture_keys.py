"""A capture says which TLS will not decrypt: a host's key log that cannot be read is named
(after a second try), while a host whose processes did no TLS (no key log yet) is no problem."""

from __future__ import annotations

import asyncio
from pathlib import Path

from simulator.lab.capture import KeySource, read_key_log


def read(source: KeySource) -> tuple[bytes, str | None]:
    return asyncio.run(read_key_log(source))


def test_a_key_log_read_where_its_host_runs(tmp_path: Path) -> None:
    keys = tmp_path / "tls-keys.log"
    keys.write_bytes(b"CLIENT_RANDOM 00 11\n")
    # `env` stands for the prefix that runs a command in a node (`ip netns exec X`, `docker
    # compose exec -T X`): the read goes through it.
    assert read(KeySource(("env",), str(keys))) == (b"CLIENT_RANDOM 00 11\n", None)
    assert read(KeySource((), str(keys))) == (b"CLIENT_RANDOM 00 11\n", None)


def test_no_key_log_yet_is_not_a_problem(tmp_path: Path) -> None:
    missing = str(tmp_path / "never-written.log")
    assert read(KeySource(("env",), missing)) == (b"", None)
    assert read(KeySource((), missing)) == (b"", None)


def test_a_node_that_cannot_be_reached_is_named(tmp_path: Path) -> None:
    keys = tmp_path / "tls-keys.log"
    keys.write_bytes(b"CLIENT_RANDOM 00 11\n")
    # A prefix that fails as a stopped container's `docker compose exec` does.
    lines, why = read(
        KeySource(
            ("sh", "-c", "echo 'service \"jabber\" is not running' >&2; exit 1", "jabber"),
            str(keys),
        )
    )
    assert lines == b""
    assert why == f'{keys} in jabber: exit 1, service "jabber" is not running'
