"""Load across the lab's firewalls: many concurrent federation sessions and relay allocations.

``edgesim load`` (and ``bench/load_bench.py``) find where the firewall's connection tracking, its
UDP timeouts, or the Edge give up. Each kind of load runs inside the host a matrix row names as
its source, as the probes do (``runner.edgesim_argv``): the federated partner's host opens MTLS
sessions to the Access Edge (row ``fed-in-5061``), the Live Messenger-style client's host
allocates relays on the A/V Edge (row ``msn-stun-in-3478``). In a swarm lab those hosts' tasks
run on the nodes labelled for their zone, so the load crosses the real network between hosts.

* :mod:`simulator.load.drive`: the drivers inside a node (sessions, allocations, a peer);
* :mod:`simulator.load.run`: the outer run: drivers in their nodes, the firewalls' connection
  tracking sampled meanwhile, one :class:`~simulator.load.run.LoadReport`.

Everything is bounded: at most :data:`MAX_COUNT` sessions or allocations, :data:`MAX_HOLD`
seconds of holding, a deadline on every step; traffic goes to the lab's addresses only.
"""

from __future__ import annotations

MAX_COUNT = 5000
"""Sessions or allocations one run may open."""
MAX_HOLD = 600.0
"""Seconds a run may hold its sessions or leave its allocations idle."""
MAX_RATE = 1000.0
"""Sessions or allocations opened per second, at most."""
