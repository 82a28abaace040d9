"""A short-lived cache of who a credential is, so that a request does not read the users
table (in a worker thread) each time.

An entry lives `RAKUTEN_AUTH_CACHE_S` seconds at most, never past its token's expiry, and
every cached entry is dropped as soon as this process commits a change to a user or an API
key (the admin API, the console). A change made elsewhere (the `users` CLI, another
replica) is in force within `RAKUTEN_AUTH_CACHE_S`; 0 turns the cache off.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sqlalchemy import event, inspect
from sqlalchemy.orm import InstanceState, Session, sessionmaker

from rakuten_mlops.db.models import ApiKey, User
from rakuten_mlops.serving.security import AUTH_CHANGED as _CHANGED
from rakuten_mlops.serving.security import Principal


@dataclass(frozen=True)
class CachedPrincipal:
    """Who a credential is, and the key its requests are rate-limited under."""

    principal: Principal
    rate_key: str
    expires: float  # time.monotonic() deadline


class PrincipalCache:
    """Credential -> principal for a few seconds (credentials kept only as SHA-256)."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, CachedPrincipal] = {}

    @staticmethod
    def _key(credential: str) -> bytes:
        return hashlib.sha256(credential.encode("utf-8")).digest()

    def get(self, credential: str) -> CachedPrincipal | None:
        """The cached principal of `credential`, None when absent or expired."""
        if self.ttl_s <= 0:
            return None
        key = self._key(credential)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry

    def put(
        self,
        credential: str,
        principal: Principal,
        rate_key: str,
        valid_until: float | None = None,
    ) -> None:
        """Cache `principal` for `credential` (`valid_until`: the token's expiry, Unix time)."""
        if self.ttl_s <= 0:
            return
        lifetime = self.ttl_s
        if valid_until is not None:
            lifetime = min(lifetime, valid_until - time.time())
        if lifetime <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[self._key(credential)] = CachedPrincipal(
            principal, rate_key, time.monotonic() + lifetime
        )

    def clear(self) -> None:
        """Forget every entry (a user or an API key changed)."""
        self._entries.clear()

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
