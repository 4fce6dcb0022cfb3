"""Helpers for the SIP core tests: readable message literals (as sipmessage's tests)."""

from __future__ import annotations


def lf2crlf(text: str) -> bytes:
    """A message written with LF line ends, as wire bytes with CRLF."""
    return text.replace("\n", "\r\n").encode()


def message(
    method: str = "MESSAGE",
    uri: str = "sip:bob@contoso.lab",
    *,
    sender: str = "sip:carol@fabrikam.lab",
    to: str | None = None,
    body: str = "hello",
    extra: str = "",
    max_forwards: str = "70",
    call_id: str = "call-1",
    cseq: int = 1,
) -> bytes:
    to = to or uri
    head = (
        f"{method} {uri} SIP/2.0\n"
        f"Via: SIP/2.0/TLS 203.0.113.10:5061;branch=z9hG4bK-peer-1;rport\n"
        f"Max-Forwards: {max_forwards}\n"
        f"From: <{sender}>;tag=f1\n"
        f"To: <{to}>\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} {method}\n"
        f"{extra}"
        f"Content-Type: text/plain\n"
        f"Content-Length: {len(body.encode())}\n"
        "\n"
    )
    return lf2crlf(head) + body.encode()
