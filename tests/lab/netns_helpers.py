"""What the netns tests share: the skip reasons and an exclusive lab."""

from __future__ import annotations

import pytest

from simulator.lab.runners.netns import lab_namespaces, requirements_problem


def skip_unless_netns() -> None:
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)
    leftovers = lab_namespaces()
    if leftovers:
        pytest.skip(
            f"a netns lab is already up ({leftovers[0]} ...); not touching it: "
            "`edgesim lab down --runner netns` first"
        )
