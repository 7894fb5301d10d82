"""The key a watched URL is kept by in the state, the history and the notices (``url_key``),
and the keys earlier versions kept it by (``earlier_keys``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from ochinai.runtime.declare import settings_of
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.logs import MASK, forms, is_secret_param, without_credentials

# Secrets shorter than this would replace noise (the log redactor's limit too).
_SHORTEST_SECRET = 4


def secret_values(*settings: object) -> dict[str, str]:
    """{each form of a secret setting's value: its variable} of the settings given."""
    found: dict[str, str] = {}
    for obj in settings:
        for s in settings_of(type(obj)):
            value = getattr(obj, s.name)
            if s.secret and value:
                found.update({f: s.env for f in forms(str(value)) if len(f) >= _SHORTEST_SECRET})
    # Longest first, so that a secret containing another is replaced whole.
    return dict(sorted(found.items(), key=lambda kv: len(kv[0]), reverse=True))


def url_key(url: str, secrets: Mapping[str, str]) -> str:
    """The key ``url`` is kept by: no userinfo, its secrets replaced by stand-ins.

    It is the URL without its userinfo (``user:password@``, ``:password@``, ``TOKEN@``),
    its query kept, so that ``/item?key=A1`` and ``/item?key=B2`` stay two items and the
    key is the link that opens. What in it is a secret is replaced by a stand-in that is
    the same on every run and differs from secret to secret: a secret setting's value
    (the API key put in a page's query) by ``***`` and the setting's name, the value of a
    query parameter named like a credential (``?token=``, ``?sig=``,
    ``logs.SECRET_PARAMS``) by ``***`` and a digest of it. Neither reaches the bucket or a
    notice; logs mask the rest as always.
    """
    parts = urlsplit(url)
    key = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    for value, variable in secrets.items():
        key = key.replace(value, f"{MASK}{variable}")
    parts = urlsplit(key)
    if not parts.query:
        return key
    query = "&".join(_kept(pair) for pair in parts.query.split("&"))
    return urlunsplit(parts._replace(query=query))


def _kept(pair: str) -> str:
    name, sep, value = pair.partition("=")
    if not sep or not value or value.startswith(MASK) or not is_secret_param(unquote_plus(name)):
        return pair
    digest = hashlib.sha256(unquote_plus(value).encode()).hexdigest()[:16]
    return f"{name}={MASK}{digest}"


def page_keys(pages: Iterable[str], secrets: Mapping[str, str]) -> dict[str, str]:
    """{page: its key}; two pages of one key are a ConfigError naming both."""
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}
    for page in pages:
        key = url_key(page, secrets)
        if key in owner:
            first, again = without_credentials(owner[key]), without_credentials(page)
            if page == owner[key]:
                raise ConfigError(f"OCHINAI_MONITOR_PAGES: {first} is listed twice; list it once")
            raise ConfigError(
                f"OCHINAI_MONITOR_PAGES: {first} and {again} are one page once the credentials "
                f"are taken out of them ({key}); list each page once"
            )
        owner[key], keys[page] = page, key
    return keys


# The key an earlier version kept a URL under, masked as its logs did (user:***@,
# ?token=***): found once more so that its items and validators are renamed, not new.
_EARLIER_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")
_EARLIER_PARAMS = re.compile(
    r"(?i)([?&](?:access_token|token|api_key|apikey|key|password|passwd|pwd|secret"
    r"|client_secret|sig|signature|x-amz-signature|x-amz-credential"
    r"|x-amz-security-token)=)[^&\s#\"'<>]+"
)


def earlier_keys(keys: Mapping[str, str]) -> dict[str, str | None]:
    """{a key earlier versions kept a URL under: its key now, or None when it was the key
    of more than one URL (which one's values it holds is unknown: they are dropped)}.

    Before, the URL as set (credentials and all); then, as the logs masked it.
    """
    earlier: dict[str, str | None] = {}
    for url, key in keys.items():
        masked = _EARLIER_PARAMS.sub(rf"\g<1>{MASK}", _EARLIER_PASSWORD.sub(rf"\g<1>{MASK}@", url))
        for old in {url, masked} - {key}:
            earlier[old] = key if earlier.get(old, key) == key else None
    return {old: key for old, key in earlier.items() if old not in keys.values()}
