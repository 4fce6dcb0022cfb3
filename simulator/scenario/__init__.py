"""Scenario scripts: whole federation flows across the lab, recorded as ladders.

A scenario is a short Python file in ``scenarios/``::

    from simulator.scenario import Lab, scenario

    @scenario(
        name="remote-user-im",
        description="A remote contoso user signs in over 443 and chats with an internal user",
        rows=["client-in-443", "int-sip-edge-to-fe"],
        needs=["access-edge", "front-end"],
    )
    async def run(lab: Lab) -> None:
        with lab.step("alice signs in from home over TLS 443"):
            ...
        lab.expect(reply.status == 200, f"bob's client answered {reply.status}, not 200")

``edgesim scenario list`` shows them, ``edgesim scenario run`` runs them against a lab and
prints passed/failed with the step that failed and why; ``--ladder`` and ``--html`` draw every
message as a ladder diagram.
"""

from simulator.scenario.api import Lab, Scenario, ScenarioFailure, ScenarioSkipped, scenario

__all__ = ["Lab", "Scenario", "ScenarioFailure", "ScenarioSkipped", "scenario"]
