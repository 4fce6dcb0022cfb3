"""What the Edge refuses: a blocked domain (403), a partner whose certificate it cannot trust
(refused in the TLS handshake on 5061), a partner whose certificate names another server (403).

The Access Edge checks federation in layers: the TLS handshake on 5061 (the partner's client
certificate must chain to a trusted CA), then the certificate's name against the partner's Edge
FQDN, then the allow/block lists. Each refusal says why (Warning / ms-diagnostics headers on a
403; the handshake refusal is in the ladder where the connection stopped).
"""

import ssl

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import sign_in, sip_user


@scenario(
    name="refused-partners",
    description="A blocked domain gets 403; a partner with an untrusted or misnamed certificate "
    "is refused (at TLS / with 403)",
    rows=["fed-in-5061"],
    needs=["access-edge", "front-end", "dns"],
)
async def run(lab: Lab) -> None:
    with lab.step("bob writes to someone at blocked.lab: the Edge answers 403"):
        async with sip_user(lab, "bob@contoso.lab", via="internal") as bob:
            await sign_in(lab, bob)
            answer = await bob.message("sip:someone@blocked.lab", "hello?")
            warning = answer.headers.get("Warning") or ""
            lab.expect(answer.code == 403, f"expected 403 for blocked.lab, got {answer.code}")
            lab.expect(
                "domain blocked.lab is blocked" in warning,
                f"the 403 does not say the domain is blocked (Warning: {warning!r})",
            )

    with lab.step("a server with a certificate from an unknown CA connects to 5061: refused"):
        untrusted = lab.pki.bad_cert("unknown-ca", "fabrikam", "fabrikam")
        refusal = ""
        try:
            async with sip_user(
                lab, "carol@fabrikam.lab", via="edge5061", cert=untrusted
            ) as impostor:
                answer = await impostor.message("sip:bob@contoso.lab", "let me in", timeout=5)
                refusal = f"answered {answer.code} {answer.phrase}"
        except (ConnectionError, ssl.SSLError) as exc:
            refusal = str(exc) or type(exc).__name__
            lab.expect(
                "trusted CA" in refusal or "closed" in refusal,
                f"the connection failed, but not at TLS: {refusal}",
            )
        else:
            lab.expect(False, f"the Edge accepted an untrusted certificate: {refusal}")

    with lab.step("a server whose certificate names another host gets 403"):
        misnamed = lab.pki.bad_cert("wrong-name", "fabrikam", "fabrikam")
        async with sip_user(lab, "carol@fabrikam.lab", via="edge5061", cert=misnamed) as carol:
            answer = await carol.message("sip:bob@contoso.lab", "it's me, carol")
            warning = answer.headers.get("Warning") or ""
            lab.expect(
                answer.code == 403, f"expected 403 for a misnamed certificate, got {answer.code}"
            )
            lab.expect(
                "does not match the Edge FQDN of fabrikam.lab" in warning,
                f"the 403 does not say the certificate name is wrong (Warning: {warning!r})",
            )
