"""Credentials never reach an error line, a log, a progress line or a record.

Every message, error and record that can hold a server URL or a key goes through this module:

- :func:`redact_url`: a URL without its ``user:password@`` and without the values of query
  parameters that look like keys (``api_key``, ``key``, ``token``, ``sig``, ...);
- :func:`redact`: free text (an error line, a traceback) with the same done to every URL in it,
  ``Authorization``/``Bearer``/``Basic`` values, ``api_key=...`` / ``"api_key": "..."`` values and
  every secret registered with :func:`register_secret` (the keys the HTTP client was given);
- :func:`redact_obj`: a JSON-like record (a spec dump, a stage config): values of keys that name
  a secret become ``***``, strings go through :func:`redact`.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

_SECRETS: set[str] = set()
_LOCK = threading.Lock()

_SECRET_PARAM = r"[^=&#\s]*(?:key|token|secret|passw(?:or)?d|sig|signature|auth)[^=&#\s]*"
_QUERY_SECRET = re.compile(rf"(?i)([?&;]{_SECRET_PARAM}=)[^&#\s'\"]+")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s'\"<>]*@")  # up to the authority's last '@'
_AUTH_HEADER = re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)"
                          r"(?:(bearer|basic|token)\s+)?[^\s\"',}]+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY_VALUE = re.compile(r"(?i)\b((?:[a-z0-9]+_)?api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+")
_SECRET_KEYS = frozenset({"api_key", "apikey", "openai_api_key", "authorization", "password",
                          "passwd", "secret", "token", "access_token", "auth_token", "bearer"})
"""Record keys whose values are secrets (``api_key_env`` names a variable, it is no secret)."""


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever :func:`redact` sees it from now on (the key a client was given)."""
    if value and len(value) >= 4:
        with _LOCK:
            _SECRETS.add(value)
            decoded = unquote(value)
            if decoded != value and len(decoded) >= 4:
                _SECRETS.add(decoded)


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@``, and the (percent-decoded) user and password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def redact_url(url: str) -> str:
    """``url`` as it may be shown: ``user:password@`` becomes ``***@``, key-like query values ``***``."""
    return redact(url)


def redact(text: Any) -> str:
    """``text`` (an error line, a traceback, a URL) with every credential in it masked."""
    s = str(text)
    if not s:
        return s
    s = _USERINFO.sub(rf"\1{MASK}@", s)
    s = _QUERY_SECRET.sub(rf"\1{MASK}", s)
    s = _AUTH_HEADER.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, s)
    s = _BEARER.sub(rf"\1 {MASK}", s)
    s = _KEY_VALUE.sub(rf"\1{MASK}", s)
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, MASK)
    return s


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like record with secret-named values masked and every string redacted."""
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and k.lower().replace("-", "_") in _SECRET_KEYS
                    and v not in (None, "") else redact_obj(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    if isinstance(obj, str):
        return redact(obj)
    return obj
