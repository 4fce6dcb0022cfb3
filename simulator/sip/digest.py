"""HTTP Digest for SIP (RFC 3261 section 22.4 with RFC 2617 qop=auth), both sides, sans-IO."""

from __future__ import annotations

import hashlib

from sipmessage import AuthCredentials


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_response(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "00000001",
    cnonce: str = "",
) -> str:
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def challenge(realm: str, nonce: str) -> str:
    """A ``WWW-Authenticate`` value."""
    return f'Digest realm="{realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'


def authorization(
    *, challenge_value: str, username: str, password: str, method: str, uri: str, cnonce: str
) -> str:
    """An ``Authorization`` value answering ``challenge_value`` (a WWW-Authenticate)."""
    params = _params(challenge_value)
    realm = params.get("realm", "")
    nonce = params.get("nonce", "")
    qop = "auth" if "auth" in params.get("qop", "").split(",") else None
    response = digest_response(
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        cnonce=cnonce,
    )
    value = (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5'
    )
    if qop:
        value += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    return value


def check(
    value: str, *, method: str, realm: str, passwords: dict[str, str], nonces: set[str]
) -> str | None:
    """The authenticated username, or None when the credentials are wrong or stale."""
    try:
        creds = AuthCredentials.parse(value)
    except ValueError:
        return None
    if creds.scheme.lower() != "digest" or creds.parameters is None:
        return None
    p = dict(creds.parameters)
    user = p.get("username", "")
    if user not in passwords or p.get("realm") != realm or p.get("nonce") not in nonces:
        return None
    expected = digest_response(
        username=user,
        realm=realm,
        password=passwords[user],
        method=method,
        uri=p.get("uri", ""),
        nonce=p.get("nonce", ""),
        qop=p.get("qop"),
        nc=p.get("nc", ""),
        cnonce=p.get("cnonce", ""),
    )
    return user if expected == p.get("response") else None


def _params(value: str) -> dict[str, str]:
    _, _, rest = value.partition(" ")
    out: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            out[key.strip().lower()] = val.strip().strip('"')
    return out
