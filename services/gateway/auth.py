"""Users, sessions, API tokens and login rate limiting, all stored in Redis.

* Passwords: argon2id (argon2-cffi) in the ``users`` hash (name -> JSON).
* Sessions: a random 256-bit id in an HttpOnly cookie; Redis keeps only its SHA-256
  (``auth:session:<sha>`` with a TTL), so a Redis dump does not leak live sessions.
* API tokens: ``sentri_<id>_<secret>``; the ``tokens`` hash keeps id -> JSON with the
  SHA-256 of the secret (a random 256-bit secret needs no slow hash) and is compared in
  constant time.  The full token is shown once, at creation.
* Login attempts are counted per client IP and per user name in Redis with a window,
  atomically and before the password is checked; past ``login_max_failures`` the login
  answers 429 with Retry-After.  A successful login clears the counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.keys import Keys

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sentri_"
SESSION_COOKIE = "sentri_session"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: a user via session or an API token."""

    user: str
    via: str  # "session" | "token"
    role: str | None = "admin"  # None: the account was deleted
    token_id: str | None = None


class AuthStore:
    def __init__(
        self, r: redis.Redis, keys: Keys, *, time_cost: int = 3, memory_kib: int = 64 * 1024
    ) -> None:
        self.r, self.keys = r, keys
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    # ------------------------------------------------------------------ users
    def get_user(self, name: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys.users, name)
        return json.loads(raw) if raw else None

    def set_password(self, name: str, password: str, role: str = "admin") -> None:
        user = self.get_user(name) or {"created": time.time(), "role": role}
        user["hash"] = self.hasher.hash(password)
        user["updated"] = time.time()
        self.r.hset(self.keys.users, name, json.dumps(user))

    def role_of(self, name: str) -> str | None:
        """The account's role (``admin`` for accounts created before roles existed);
        None when the account no longer exists."""
        user = self.get_user(name)
        if user is None:
            return None
        return str(user.get("role") or "admin")

    def verify_password(self, name: str, password: str) -> bool:
        user = self.get_user(name)
        if not user:
            # Spend the same time as a real check so user names cannot be probed by timing.
            try:
                self.hasher.verify(self._dummy_hash, password)
            except VerificationError:
                pass
            return False
        try:
            self.hasher.verify(user["hash"], password)
        except (VerificationError, InvalidHashError):
            return False
        if self.hasher.check_needs_rehash(user["hash"]):
            self.set_password(name, password, user.get("role", "admin"))
        return True

    def ensure_admin(
        self, name: str, configured_password: str | None, state_dir: str | os.PathLike[str]
    ) -> str | None:
        """Provision the admin.  Returns a newly generated password (to show once) or None.

        A configured password always wins (it is re-hashed on every start).  Without one,
        an existing admin is kept; otherwise a strong password is generated and written
        to ``<state_dir>/admin-password.txt`` with mode 0600.
        """
        if configured_password:
            self.set_password(name, configured_password)
            return None
        if self.get_user(name):
            return None
        password = secrets.token_urlsafe(18)
        # HSETNX: two gateways starting together must not both create an admin.
        user = {"created": time.time(), "role": "admin", "hash": self.hasher.hash(password)}
        if not self.r.hsetnx(self.keys.users, name, json.dumps(user)):
            return None
        path = Path(state_dir) / "admin-password.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"user: {name}\npassword: {password}\n")
        os.chmod(path, 0o600)
        return password

    # --------------------------------------------------------------- sessions
    def create_session(self, user: str, ttl_s: int) -> str:
        sid = secrets.token_urlsafe(32)
        self.r.set(
            self.keys.k_auth("session", _sha(sid)),
            json.dumps({"user": user, "created": time.time()}),
            ex=ttl_s,
        )
        return sid

    def session_user(self, sid: str) -> str | None:
        if not sid or len(sid) > 128:
            return None
        raw = self.r.get(self.keys.k_auth("session", _sha(sid)))
        return json.loads(raw)["user"] if raw else None

    def delete_session(self, sid: str) -> None:
        if sid and len(sid) <= 128:
            self.r.delete(self.keys.k_auth("session", _sha(sid)))

    # ----------------------------------------------------------------- tokens
    def create_token(self, name: str, user: str) -> tuple[str, dict[str, Any]]:
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        meta = {
            "id": token_id,
            "name": name,
            "user": user,
            "created": time.time(),
            "last_used": None,
            "sha256": _sha(secret),
        }
        self.r.hset(self.keys.tokens, token_id, json.dumps(meta))
        return f"{TOKEN_PREFIX}{token_id}_{secret}", _public(meta)

    def list_tokens(self) -> list[dict[str, Any]]:
        out = [_public(json.loads(v)) for v in self.r.hvals(self.keys.tokens)]
        return sorted(out, key=lambda t: t["created"])

    def revoke_token(self, token_id: str) -> bool:
        return bool(self.r.hdel(self.keys.tokens, token_id))

    def token_principal(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        token_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
        if not token_id or not secret:
            return None
        raw = self.r.hget(self.keys.tokens, token_id)
        if not raw:
            return None
        meta = json.loads(raw)
        if not hmac.compare_digest(meta["sha256"], _sha(secret)):
            return None
        # Coarse last-used stamp (at most once a minute) to keep reads cheap.
        now = time.time()
        if not meta.get("last_used") or now - meta["last_used"] > 60:
            meta["last_used"] = now
            self.r.hset(self.keys.tokens, token_id, json.dumps(meta))
        return Principal(
            user=meta["user"], via="token", role=self.role_of(meta["user"]), token_id=token_id
        )

    # ------------------------------------------------------------ rate limit
    # Every attempt is counted BEFORE its password is checked, in one atomic step per
    # attempt: INCR, and EXPIRE whenever the key has no TTL (so a lost EXPIRE can never
    # leave a permanent lockout).  Concurrent attempts therefore cannot slip past the
    # limit between a check and a count.
    _COUNT_ATTEMPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('TTL', key)
  if ttl < 0 then
    redis.call('EXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[#out + 1] = n
  out[#out + 1] = ttl
end
return out
"""

    def count_login_attempt(self, ip: str, user: str) -> int:
        """Count one login attempt for this IP and this user name.  Returns the seconds
        until another attempt is allowed: 0 when this attempt may check its password."""
        keys = self._fail_keys(ip, user)
        res = self.r.eval(self._COUNT_ATTEMPT, len(keys), *keys, self._window_s)
        wait = 0
        for n, ttl in zip(res[::2], res[1::2], strict=True):
            if int(n) > self._max_failures:
                wait = max(wait, max(1, int(ttl)))
        return wait

    def clear_failures(self, ip: str, user: str) -> None:
        self.r.delete(*self._fail_keys(ip, user))

    def configure_rate_limit(self, max_failures: int, window_s: int) -> None:
        self._max_failures, self._window_s = max_failures, window_s

    _max_failures = 5
    _window_s = 60

    def _fail_keys(self, ip: str, user: str) -> list[str]:
        return [
            self.keys.k_auth("fail", "ip", ip),
            self.keys.k_auth("fail", "user", _sha(user.lower())[:32]),
        ]


class PasswordCheckBusy(Exception):
    """More password checks are waiting than ``login_max_pending_checks``."""


class PasswordChecks:
    """Runs argon2 verifications on a small executor of their own.

    Each check costs ``password_hash_memory_kib`` of memory and a core for a fraction
    of a second: at most ``workers`` run at once, at most ``max_pending`` wait (more
    are refused with :class:`PasswordCheckBusy`), and none of them occupies the shared
    threadpool that serves every other route (``/healthz`` included).
    """

    def __init__(self, workers: int, max_pending: int) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Callable[..., bool], *args: Any) -> bool:
        with self._lock:
            if self._pending >= self._max_pending:
                raise PasswordCheckBusy
            self._pending += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="argon2")
            pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        finally:
            with self._lock:
                self._pending -= 1

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _public(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("id", "name", "user", "created", "last_used")}


def admin_password_banner(user: str, password: str, path: str) -> str:
    """The one-time box printed on first start."""
    lines = [
        "Sentri gateway: first start, an administrator account was created.",
        f"  user:     {user}",
        f"  password: {password}",
        f"Also saved (mode 0600) in {path}.",
        "It is shown only this once; change it with SENTRI_GATEWAY__ADMIN_PASSWORD.",
    ]
    width = max(len(x) for x in lines) + 2
    border = "+" + "-" * width + "+"
    return "\n".join([border, *(f"| {x.ljust(width - 1)}|" for x in lines), border])
