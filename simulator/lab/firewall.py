"""Moved to :mod:`simulator.firewall.render`; this name stays until the runners import it there."""

from simulator.firewall.render import (
    BROKEN_NOTE,
    TABLE,
    FirewallPlan,
    FlowRule,
    plan_firewall,
    render_all,
    render_broken_external,
    render_firewall,
    write_all,
)

__all__ = [
    "BROKEN_NOTE",
    "TABLE",
    "FirewallPlan",
    "FlowRule",
    "plan_firewall",
    "render_all",
    "render_broken_external",
    "render_firewall",
    "write_all",
]
