"""The port matrix: every flow the Edge needs (or must not get), as data.

``rows.toml`` holds one row per row of the seed tables (Lync Server 2013 port summaries), the
internal rows the seeds leave implicit, and negative rows that must stay blocked. A row names
topology roles, not addresses; :func:`resolve` turns it into concrete endpoints of a topology.
"""

from simulator.matrix.model import (
    Endpoint,
    Expectation,
    MatrixRow,
    ResolvedRow,
    Seed,
    load_matrix,
    resolve,
    resolve_all,
)

__all__ = [
    "Endpoint",
    "Expectation",
    "MatrixRow",
    "ResolvedRow",
    "Seed",
    "load_matrix",
    "resolve",
    "resolve_all",
]
