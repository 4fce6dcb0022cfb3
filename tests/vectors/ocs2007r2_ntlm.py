"""A real NTLM sign-in between Office Communicator 2007 R2 and OCS 2007 R2 ([MS-SIPAE]).

Source: the pidgin-sipe project's NTLM tests (``src/core/sip-sec-ntlm-tests.c``, "real
Communicator 2007 R2 tests"), which recreate a captured exchange: the CHALLENGE_MESSAGE the
server sent, the AUTHENTICATE_MESSAGE the client answered (user ``User`` of domain ``COSMO``,
password ``Pa$$word``), the client's signed REGISTER and the server's signed 200 OK. The
signatures were computed by Microsoft's client and server, so a server that reproduces them
speaks their dialect.
"""

PASSWORD = "Pa$$word"
USER = "User"
DOMAIN = "cosmo.local"
TARGETNAME = "cosmo-ocs-r2.cosmo.local"

CHALLENGE = bytes.fromhex(
    "4E544C4D53535000020000000000000038000000F38298E2DD1BAAF4E7E218D1000000000000000096009600"
    "380000000502CE0E0000000F02000A0043004F0053004D004F000100180043004F0053004D004F002D004F00"
    "430053002D00520032000400160063006F0073006D006F002E006C006F00630061006C000300300063006F00"
    "73006D006F002D006F00630073002D00720032002E0063006F0073006D006F002E006C006F00630061006C00"
    "0500160063006F0073006D006F002E006C006F00630061006C0000000000"
)

AUTHENTICATE_B64 = (
    "TlRMTVNTUAADAAAAGAAYAHIAAADGAMYAigAAAAoACgBIAAAACAAIAFIAAAAYABgAWgAAABAAEABQAQAAVYKYYgUCzg4"
    "AAAAPQwBPAFMATQBPAFUAcwBlAHIAQwBPAFMATQBPAC0ATwBDAFMALQBSADIAoeku/k4Hi/fFwASazGFmwtauh1yw/"
    "apBjcDIAK527KYG0rn769BHMQEBAAAAAAAAWVGaFye5ygHWrodcsP2qQQAAAAACAAoAQwBPAFMATQBPAAEAGABDAE8A"
    "UwBNAE8ALQBPAEMAUwAtAFIAMgAEABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAMAMABjAG8AcwBtAG8ALQBvAGMAcw"
    "AtAHIAMgAuAGMAbwBzAG0AbwAuAGwAbwBjAGEAbAAFABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAAAAAAAAAAAMctz"
    "nhyoCkmFkeiueXEV5A=="
)

REGISTER = (
    "REGISTER sip:cosmo.local SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 192.168.172.6:12723\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15\r\n"
    "To: <sip:user@cosmo.local>\r\n"
    "Call-ID: 4037df9284354df39065195bd57a4b14\r\n"
    "CSeq: 3 REGISTER\r\n"
    'Contact: <sip:192.168.172.6:12723;transport=tls;ms-opaque=fad3dfab32>;methods="INVITE, '
    'MESSAGE, INFO, OPTIONS, BYE, CANCEL, NOTIFY, ACK, REFER, BENOTIFY";proxy=replace;'
    '+sip.instance="<urn:uuid:34D859DB-6585-5F91-A3B4-DE853C15347D>"\r\n'
    "User-Agent: UCCAPI/3.5.6907.0 OC/3.5.6907.0 (Microsoft Office Communicator 2007 R2)\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
REGISTER_BUFFER = (
    "<NTLM><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local>"
    "<4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52>"
    "<sip:user@cosmo.local><><><><>"
)
REGISTER_CRAND, REGISTER_CNUM = "13317733", "1"
REGISTER_SIGNATURE = "0100000029618e9651b65a7764000000"

RESPONSE = (
    "SIP/2.0 200 OK\r\n"
    "ms-keep-alive: UAS; tcp=no; hop-hop=yes; end-end=no; timeout=300\r\n"
    'From: "User"<sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15\r\n'
    "To: <sip:user@cosmo.local>;tag=5E61CCD925D17E043D9A74835A88F664\r\n"
    "Call-ID: 4037df9284354df39065195bd57a4b14\r\n"
    "CSeq: 3 REGISTER\r\n"
    "Via: SIP/2.0/TLS 192.168.172.6:12723;ms-received-port=12723;ms-received-cid=2600\r\n"
    "Expires: 7200\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
RESPONSE_BUFFER = (
    "<NTLM><9616454F><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local>"
    "<4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52>"
    "<sip:user@cosmo.local><5E61CCD925D17E043D9A74835A88F664><><><7200><200>"
)
RESPONSE_SRAND = "9616454F"
RESPONSE_RSPAUTH = "01000000E615438A917661BE64000000"
