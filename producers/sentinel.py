"""Redis Sentinel addresses: one `TRIGGER_REDIS_URL` that names the sentinels, read here for both sides.

The form is kombu's, which operators of Celery know: `sentinel://[[user]:password@]host[:port][/db]`,
one per sentinel, joined by `;`. The master's name comes from `TRIGGER_REDIS_MASTER_NAME` or a
`?master_name=` query. Producers, the state store and the worker's broker all find the current
primary through these sentinels, so a failover moves every side to the new primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

SCHEME = "sentinel"
DEFAULT_PORT = 26379


class SentinelUrlError(ValueError):
    """The sentinel URL cannot be read; the message names the part and never a password."""


class _Part(NamedTuple):
    """One `;`-separated sentinel URL, as written (None: not given in this part)."""

    host: str
    port: int
    db: int | None
    credentials: tuple[str | None, str | None] | None
    master_name: str | None


@dataclass(frozen=True)
class SentinelAddress:
    """Where the primary is found (the sentinels, the master's name) and what to use on it (db, credentials)."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def master_options(self) -> dict[str, Any]:
        """redis-py's keyword arguments for connections to the primary."""
        return {"db": self.db, "username": self.username, "password": self.password}

    def kombu_url(self) -> str:
        """kombu's form with credentials and db on every sentinel: after a connection error kombu moves to
        the next URL alone, and a URL without them would connect without a password or to db 0."""
        return ";".join(f"{SCHEME}://{self._userinfo()}{host}:{port}/{self.db}" for host, port in self.sentinels)

    def _userinfo(self) -> str:
        if self.username is None and self.password is None:
            return ""
        user = quote(self.username or "", safe="")
        return f"{user}:{quote(self.password or '', safe='')}@"


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names sentinels rather than one Redis server."""
    return url.strip().lower().startswith(f"{SCHEME}://")


def parse_sentinel_url(url: str, master_name: str | None = None) -> SentinelAddress:
    """The address `url` names; `master_name` (the setting) and a `?master_name=` query must agree."""
    parts = [_part(text.strip(), number) for number, text in enumerate(url.split(";"), 1) if text.strip()]
    if not parts:
        raise SentinelUrlError("the sentinel URL names no sentinel")
    username, password = _one("credentials", [p.credentials for p in parts]) or (None, None)
    db = _one("db", [p.db for p in parts]) or 0
    return SentinelAddress(
        sentinels=tuple((p.host, p.port) for p in parts),
        master_name=_master_name(master_name, [p.master_name for p in parts]),
        db=db,
        username=username,
        password=password,
    )


def _part(text: str, number: int) -> _Part:
    parts = urlsplit(text)
    if parts.scheme.lower() != SCHEME:
        raise SentinelUrlError(f"part {number} of the sentinel URL is not a {SCHEME}:// URL (all parts must be)")
    if not parts.hostname:
        raise SentinelUrlError(f"part {number} of the sentinel URL names no host")
    where = f"part {number} ({parts.hostname})"
    return _Part(
        host=parts.hostname,
        port=_port(parts, where),
        db=_db(parts.path, where),
        credentials=_credentials(parts),
        master_name=_query_master_name(parts.query, parts.fragment, where),
    )


def _port(parts: Any, where: str) -> int:
    try:
        return int(parts.port or DEFAULT_PORT)
    except ValueError:
        raise SentinelUrlError(f"{where} of the sentinel URL has a port that is not a number from 0 to 65535") from None


def _db(path: str, where: str) -> int | None:
    text = path.strip("/")
    if not text:
        return None
    if not text.isdigit():
        raise SentinelUrlError(f"{where} of the sentinel URL has db {text!r}; the path must be a db number")
    return int(text)


def _credentials(parts: Any) -> tuple[str | None, str | None] | None:
    if "@" not in parts.netloc:
        return None
    username = unquote(parts.username) if parts.username else None
    return username, unquote(parts.password) if parts.password is not None else None


def _query_master_name(query: str, fragment: str, where: str) -> str | None:
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"master_name"})
    if unknown or fragment:
        extra = unknown or ["#" + fragment]
        raise SentinelUrlError(f"{where} of the sentinel URL has options {extra}; the only one read is master_name")
    names = options.get("master_name", [])
    if len(names) > 1 or (names and not names[0]):
        raise SentinelUrlError(f"{where} of the sentinel URL must give master_name once, not empty")
    return names[0] if names else None


def _one(what: str, values: list[Any]) -> Any:
    """The value the parts that give one agree on (None when none does)."""
    given = {value for value in values if value is not None}
    if len(given) > 1:
        raise SentinelUrlError(f"the parts of the sentinel URL give different {what}; give them once, or the same")
    return given.pop() if given else None


def _master_name(setting: str | None, from_query: list[str | None]) -> str:
    in_url = _one("master_name", from_query)
    if setting and in_url and setting != in_url:
        raise SentinelUrlError(
            f"TRIGGER_REDIS_MASTER_NAME is {setting!r} but the sentinel URL's master_name is {in_url!r}"
        )
    name = setting or in_url
    if not name:
        raise SentinelUrlError(
            "a sentinel:// URL needs the master's name: set TRIGGER_REDIS_MASTER_NAME or add ?master_name=NAME"
        )
    return name
