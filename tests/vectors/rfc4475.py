"""SIP torture test messages of RFC 4475 (May 2006), transcribed from the RFC's section 3.

Each constant names its section and the RFC's file name. Written with LF line ends and turned
into wire bytes (CRLF) by :func:`wire`. Where the RFC writes a long repeated string with its
``<repeat count=N>`` notation, the string is repeated here. Section 3.1.1.11 (``mpart01``, an
S/MIME body) and 3.1.1.12 (``unreason``, a UTF-8 reason phrase) are not transcribed.
"""

from __future__ import annotations


def wire(text: str) -> bytes:
    """The message as it goes on the wire: CRLF line ends, UTF-8."""
    return text.replace("\n", "\r\n").encode()


_SDP = """v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.{host}
s=-
c=IN IP4 192.0.2.{conn}
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
"""

#: 3.1.1.1 A Short Tortuous INVITE (wsinv): line folding all over, LWS around colons.
WSINV = wire(
    """INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

"""
    + _SDP.format(host=3, conn=4)
)

#: 3.1.1.3 Valid Use of the % Escaping Mechanism (esc01).
ESC01 = wire(
    """INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150

"""
    + _SDP.format(host=1, conn=1)
)

#: 3.1.1.4 Escaped Nulls in URIs (escnull).
ESCNULL = wire(
    """REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

"""
)

#: 3.1.1.5 Use of % When It Is Not an Escape (esc02).
ESC02 = wire(
    """RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

"""
)

#: 3.1.1.6 No LWS between Display Name and < (lwsdisp).
LWSDISP = wire(
    """OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

"""
)

_CALLER = "amazinglylongcallername" * 5
_VIAS = "".join(
    f"{name}SIP/2.0/TCP sip{33 - i}.example.com\n"
    for i, name in enumerate(
        ["Via: ", "v: ", "V: ", "Via: ", "ViA: ", "VIa: ", "VIA: ", "via: ", "viA: ", "vIa: "]
        + ["vIA: ", "V :  ", "v :  ", "V  : ", "v  : ", "Via : ", "Via  : "]
        + ["Via: "] * 16
    )
)

#: 3.1.1.7 Long Values in Header Fields (longreq): 34 Via values, long names and values.
LONGREQ = wire(
    "INVITE sip:user@example.com SIP/2.0\n"
    f'To: "I have a user name of {"extreme" * 10} proportion"'
    f"<sip:user@example.com:6000;unknownparam1=very{'long' * 20}value;"
    f"longparam{'name' * 25}=shortvalue;very{'long' * 25}ParameterNameWithNoValue>\n"
    f"F: sip:{_CALLER}@example.net;tag=12{'982' * 50}424;"
    f"unknownheaderparam{'name' * 20}=unknowheaderparam{'value' * 15};"
    f"unknownValueless{'paramname' * 10}\n"
    f"Call-ID: longreq.one{'really' * 20}longcallid\n"
    "CSeq: 3882340 INVITE\n"
    f"Unknown-{'Long' * 20}-Name: unknown-{'long' * 20}-value; "
    f"unknown-{'long' * 20}-parameter-name = unknown-{'long' * 20}-parameter-value\n"
    + _VIAS
    + f"Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very{'long' * 50}branchvalue\n"
    "Max-Forwards: 70\n"
    f"Contact: <sip:{_CALLER}@host5.example.net>\n"
    "Content-Type: application/sdp\n"
    "l: 150\n"
    "\n" + _SDP.format(host=1, conn=1)
)

#: 3.1.1.8 Extra Trailing Octets in a UDP Datagram (dblreq): on a stream, two messages.
DBLREQ = wire(
    """REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0

INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

"""
    + _SDP.format(host=15, conn=15).replace("m=video", "m =video")
)

#: 3.1.1.9 Semicolon-Separated Parameters in URI User Part (semiuri).
SEMIURI = wire(
    """OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

"""
)

#: 3.1.1.10 Varied and Unknown Transport Types (transports).
TRANSPORTS = wire(
    """OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

"""
)

#: 3.1.1.13 Empty Reason Phrase (noreason): a response.
NOREASON = wire(
    """SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

"""
)

#: The valid messages of section 3.1.1 transcribed here, by the RFC's file name.
VALID: dict[str, bytes] = {
    "wsinv": WSINV,
    "esc01": ESC01,
    "escnull": ESCNULL,
    "esc02": ESC02,
    "lwsdisp": LWSDISP,
    "longreq": LONGREQ,
    "dblreq": DBLREQ,
    "semiuri": SEMIURI,
    "transports": TRANSPORTS,
    "noreason": NOREASON,
}

#: 3.3.2 Request-URI with Unknown Scheme (unkscm): a proxy answers 416.
UNKSCM = wire(
    """OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0

"""
)
