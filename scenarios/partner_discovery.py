"""The Edge discovers a federated partner's Edge through DNS, as open federation does.

Lync's Access Edge finds a partner's Edge by the SRV record _sipfederationtls._tcp.<domain>,
then its A record, from the Edge's external interface. A firewall that blocks the Edge's DNS
breaks federation here, before any SIP is sent. The public DNS must not give away internal
names.
"""

from simulator.dns.resolver import ResolutionError
from simulator.scenario import Lab, scenario


@scenario(
    name="partner-discovery",
    description="The Edge finds fabrikam.lab's Edge by DNS SRV; public DNS hides internal names",
    rows=["dns-edge-ext", "sipfed-out-5061"],
    needs=["dns"],
)
async def run(lab: Lab) -> None:
    dns = lab.resolver("edge:access")

    with lab.step("the Edge asks for _sipfederationtls._tcp.fabrikam.lab"):
        targets = await dns.srv("_sipfederationtls._tcp.fabrikam.lab")
        first = targets[0]
        lab.expect(
            (first.target, first.port) == ("sip.fabrikam.lab", 5061),
            f"SRV points at {first.target}:{first.port}, not sip.fabrikam.lab:5061",
        )

    with lab.step("the Edge resolves sip.fabrikam.lab"):
        addresses = await dns.a(first.target)
        fabrikam = lab.address("fabrikam")
        lab.expect(addresses == [fabrikam], f"sip.fabrikam.lab is {addresses}, not [{fabrikam}]")

    with lab.step("the public DNS does not know the Edge's internal name"):
        try:
            leaked = await dns.a("edge-int.contoso.lab")
        except ResolutionError as exc:
            lab.expect("NXDOMAIN" in str(exc), f"expected NXDOMAIN, got: {exc}")
        else:
            raise AssertionError(f"the public DNS gives away edge-int.contoso.lab: {leaked}")

    with lab.step("the internal side resolves the Front End pool"):
        pool = await lab.resolver("edge:internal").a("fe.contoso.lab")
        lab.expect(pool == [lab.address("fe")], f"fe.contoso.lab is {pool}")
