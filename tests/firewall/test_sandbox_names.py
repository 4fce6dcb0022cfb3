"""The audit's sandbox namespaces and a netns lab's never share a name, whatever the lab is
called and whatever the audit's process id: ``lab down`` never removes a running audit's
namespaces, and an audit's clean-up of stale sandboxes never removes a lab's."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from simulator.firewall.sandbox import Sandbox, sandbox_prefix, stale_namespaces
from simulator.lab.runners.base import DEFAULT_LAB, LabName
from simulator.lab.topology import Topology
from simulator.matrix.model import load_matrix

LAB_NAMES = st.one_of(st.just(DEFAULT_LAB), st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))
NODES = st.sampled_from(["edge", "fw-external", "sw", "f0", "h3"])


def dead(pid: int) -> bool:
    return False


def test_the_lab_named_a_and_the_audits_pid_owns_none_of_its_namespaces(
    topology: Topology,
) -> None:
    box = Sandbox(topology, load_matrix())
    nodes = [*(fw.id for fw in topology.firewalls), *(h.id for h in box.hosts)]
    names = [box.switch, *(box.ns(n) for n in nodes)]
    # The names were "esa<pid>-...": the namespaces of the lab "a<pid>".
    lab = LabName(f"a{os.getpid()}"[:8])
    assert [n for n in names if lab.owns(n)] == []
    assert stale_namespaces([lab.namespace("edge"), lab.namespace("sw")], dead) == []


@given(lab=LAB_NAMES, node=NODES, pid=st.integers(1, 4_194_304), tag=st.sampled_from("ru"))
def test_no_lab_name_and_no_sandbox_name_meet(lab: str, node: str, pid: int, tag: str) -> None:
    name = LabName(lab)
    for sandbox in (f"{sandbox_prefix(pid)}{node}", f"{sandbox_prefix(pid, tag)}{node}"):
        assert not name.owns(sandbox)
        assert stale_namespaces([sandbox], dead) == [sandbox]
    assert stale_namespaces([name.namespace(node)], dead) == []
