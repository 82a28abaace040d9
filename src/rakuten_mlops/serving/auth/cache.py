"""A short-lived cache of who a credential is, so that a request does not read the users
table (in a worker thread) each time.

An entry is used `RAKUTEN_AUTH_CACHE_S` seconds at most, never past its token's expiry, and
every cached entry is dropped as soon as this process commits a change to a user or an API
key (the admin API, the console). A change made elsewhere (the `users` CLI, another
replica) is in force within `RAKUTEN_AUTH_CACHE_S`; 0 turns the cache off. While the
database is unreachable, the last known state is used for `RAKUTEN_AUTH_STALE_S` seconds.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sqlalchemy import event, inspect
from sqlalchemy.orm import InstanceState, Session, sessionmaker

from rakuten_mlops.db.models import ApiKey, User
from rakuten_mlops.serving.auth.principals import AUTH_CHANGED as _CHANGED
from rakuten_mlops.serving.auth.principals import Principal, UserState


@dataclass(frozen=True)
class CachedPrincipal:
    """Who a credential is, and the key its requests are rate-limited under."""

    principal: Principal
    rate_key: str
    verified_at: float  # time.monotonic() of the database read
    valid_until: float | None  # the token's expiry (Unix time), None for an API key


class PrincipalCache:
    """Credential -> principal for a few seconds (credentials kept only as SHA-256).

    Entries are also kept, as the last known state, for `stale_s` seconds: while the
    database is unreachable a caller seen within that time is still let in (`get_stale`,
    `known_user`), never past its token's expiry; a caller never seen is not.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000, stale_s: float = 0.0) -> None:
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self._entries: dict[bytes, CachedPrincipal] = {}
        self._users: dict[str, tuple[UserState, float]] = {}

    @staticmethod
    def _key(credential: str) -> bytes:
        return hashlib.sha256(credential.encode("utf-8")).digest()

    def _lookup(self, credential: str, max_age_s: float) -> CachedPrincipal | None:
        if max_age_s <= 0:
            return None
        entry = self._entries.get(self._key(credential))
        if entry is None or time.monotonic() - entry.verified_at >= max_age_s:
            return None
        if entry.valid_until is not None and entry.valid_until <= time.time():
            return None
        return entry

    def get(self, credential: str) -> CachedPrincipal | None:
        """The cached principal of `credential`, None when absent or older than the TTL."""
        return self._lookup(credential, self.ttl_s)

    def get_stale(self, credential: str) -> CachedPrincipal | None:
        """The last known principal of `credential` (seen within `stale_s`), for when the
        database cannot be read."""
        return self._lookup(credential, max(self.stale_s, self.ttl_s))

    def put(
        self,
        credential: str,
        principal: Principal,
        rate_key: str,
        valid_until: float | None = None,
    ) -> None:
        """Cache `principal` for `credential` (`valid_until`: the token's expiry, Unix time)."""
        if self.ttl_s <= 0 and self.stale_s <= 0:
            return
        if valid_until is not None and valid_until <= time.time():
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[self._key(credential)] = CachedPrincipal(
            principal, rate_key, time.monotonic(), valid_until
        )

    def remember_user(self, username: str, state: UserState) -> None:
        """Keep the state of a user just read from the database."""
        if self.stale_s <= 0:
            return
        if len(self._users) >= self.max_entries:
            self._users.clear()
        self._users[username] = (state, time.monotonic())

    def known_user(self, username: str) -> UserState | None:
        """The last known state of `username`, when read within `stale_s`."""
        known = self._users.get(username)
        if known is None or time.monotonic() - known[1] >= self.stale_s:
            return None
        return known[0]

    def clear(self) -> None:
        """Forget every entry (a user or an API key changed)."""
        self._entries.clear()
        self._users.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def watch(self, session_factory: sessionmaker[Session]) -> None:
        """Clear the cache whenever a session of `session_factory` commits a change to a
        user or an API key."""

        @event.listens_for(session_factory, "after_flush")
        def _note_change(session: Session, _context: object) -> None:
            added_or_deleted = (*session.new, *session.deleted)
            if any(isinstance(row, User | ApiKey) for row in added_or_deleted) or any(
                _changes_who(row) for row in session.dirty
            ):
                session.info[_CHANGED] = True

        @event.listens_for(session_factory, "after_commit")
        def _clear_on_commit(session: Session) -> None:
            if session.info.pop(_CHANGED, False):
                self.clear()

        @event.listens_for(session_factory, "after_rollback")
        def _forget_on_rollback(session: Session) -> None:
            session.info.pop(_CHANGED, None)


def _changes_who(row: object) -> bool:
    """A user or API key row changed in something else than when the key was last used."""
    if not isinstance(row, User | ApiKey):
        return False
    state: InstanceState[User | ApiKey] = inspect(row)
    changed = {attr.key for attr in state.attrs if attr.history.has_changes()}
    return bool(changed - {"last_used_at"})
