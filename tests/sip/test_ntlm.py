"""[MS-SIPAE] NTLM at the Front End: a real OCS 2007 R2 exchange, and a round trip with
pyspnego's NTLM initiator, in memory."""

from __future__ import annotations

import base64

import pytest
from sipmessage import Message
from spnego._ntlm_raw.messages import Challenge

from simulator.sip.ntlm import (
    NtlmError,
    NtlmServer,
    auth_params,
    signature_buffer,
)
from tests.vectors import ocs2007r2_ntlm as v


def _server(random_bytes: list[bytes]) -> NtlmServer:
    def random(n: int) -> bytes:
        value = random_bytes.pop(0)
        assert len(value) == n
        return value

    return NtlmServer(
        targetname=v.TARGETNAME, users={"user": v.PASSWORD}, domain=v.DOMAIN, random=random
    )


def _ocs_sa(srand: bytes):
    server = _server([srand])
    server._register("2BDBAC9D", Challenge.unpack(v.CHALLENGE))
    params = {"opaque": "2BDBAC9D", "gssapi-data": v.AUTHENTICATE_B64}
    return server.authenticate(params).sa


def test_signature_buffers_are_the_ones_communicator_and_ocs_signed():
    register = Message.parse(v.REGISTER.encode())
    response = Message.parse(v.RESPONSE.encode())
    common = {"scheme": "NTLM", "realm": "SIP Communications Service", "targetname": v.TARGETNAME}
    got = signature_buffer(register, rand=v.REGISTER_CRAND, num=v.REGISTER_CNUM, **common)
    assert got.decode() == v.REGISTER_BUFFER
    got = signature_buffer(response, rand=v.RESPONSE_SRAND, num="1", **common)
    assert got.decode() == v.RESPONSE_BUFFER


def test_the_server_accepts_communicators_authenticate_and_signs_as_ocs():
    sa = _ocs_sa(bytes.fromhex(v.RESPONSE_SRAND))
    assert sa.user == v.USER
    register = Message.parse(v.REGISTER.encode())
    sa.verify(
        register,
        {"crand": v.REGISTER_CRAND, "cnum": v.REGISTER_CNUM, "response": v.REGISTER_SIGNATURE},
    )
    response = Message.parse(v.RESPONSE.encode())
    _, info = auth_params(sa.sign(response))
    assert info["rspauth"] == v.RESPONSE_RSPAUTH
    assert (info["srand"], info["snum"], info["opaque"]) == (v.RESPONSE_SRAND, "1", "2BDBAC9D")


def test_a_tampered_message_or_signature_is_refused():
    sa = _ocs_sa(b"\0\0\0\0")
    register = Message.parse(v.REGISTER.replace("CSeq: 3", "CSeq: 4").encode())
    params = {"crand": v.REGISTER_CRAND, "cnum": v.REGISTER_CNUM, "response": v.REGISTER_SIGNATURE}
    with pytest.raises(NtlmError, match="does not verify"):
        sa.verify(register, params)
    with pytest.raises(NtlmError, match="not hexadecimal"):
        sa.verify(register, {**params, "response": "zz"})


def test_a_wrong_password_an_unknown_user_and_a_replayed_opaque_are_refused():
    server = NtlmServer(targetname=v.TARGETNAME, users={"user": "other"}, domain=v.DOMAIN)
    server._register("AA", Challenge.unpack(v.CHALLENGE))
    with pytest.raises(NtlmError, match="wrong password"):
        server.authenticate({"opaque": "AA", "gssapi-data": v.AUTHENTICATE_B64})
    with pytest.raises(NtlmError, match="no NTLM handshake"):
        server.authenticate({"opaque": "AA", "gssapi-data": v.AUTHENTICATE_B64})
    server = NtlmServer(targetname=v.TARGETNAME, users={"bob": "x"}, domain=v.DOMAIN)
    server._register("BB", Challenge.unpack(v.CHALLENGE))
    with pytest.raises(NtlmError, match="unknown user"):
        server.authenticate({"opaque": "BB", "gssapi-data": v.AUTHENTICATE_B64})
    server._register("CC", Challenge.unpack(v.CHALLENGE))
    with pytest.raises(NtlmError, match="does not parse"):
        server.authenticate({"opaque": "CC", "gssapi-data": "bm90IG50bG0="})


def test_round_trip_with_pyspnegos_initiator():
    import spnego

    server = NtlmServer(
        targetname="fe.contoso.lab", users={"alice": "s3cret"}, domain="contoso.lab"
    )
    assert server.offer() == (
        'NTLM realm="SIP Communications Service", targetname="fe.contoso.lab", version=4'
    )
    client = spnego.client("alice@contoso.lab", "s3cret", protocol="ntlm")
    client.step()  # its NEGOTIATE_MESSAGE: connectionless NTLM sends none
    challenged = server.challenge()
    scheme, params = auth_params(challenged.header)
    assert scheme == "NTLM" and server.matches(params) and params["version"] == "4"
    token = client.step(base64.b64decode(params["gssapi-data"]))
    established = server.authenticate(
        {"opaque": params["opaque"], "gssapi-data": base64.b64encode(token).decode()}
    )
    assert established.sa.user == "alice@contoso.lab"
    assert established.sa.session_key == client.session_key


def test_auth_params_reads_quoted_and_bare_values():
    scheme, params = auth_params(
        'NTLM qop="auth", realm="SIP Communications Service", version=4, gssapi-data=""'
    )
    assert scheme == "NTLM"
    assert params == {
        "qop": "auth",
        "realm": "SIP Communications Service",
        "version": "4",
        "gssapi-data": "",
    }
