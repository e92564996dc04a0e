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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.gateway.roles import ALL, ROLE_RANK, CameraScope, lower_role
from shared.keys import Keys

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sentri_"
SESSION_COOKIE = "sentri_session"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: a user via session or an API token, with the role and camera
    scope in force for this request (a token's are capped by its owner's)."""

    user: str
    via: str  # "session" | "token"
    role: str = "admin"
    token_id: str | None = None
    scope: CameraScope = field(default_factory=CameraScope)
    #: The session id or token that authenticated this principal, so long-lived
    #: connections can check it again (never logged, never shown).
    credential: str = field(default="", repr=False, compare=False)


class AccountError(Exception):
    """An account change that cannot be made; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def user_scope(user: dict[str, Any]) -> CameraScope:
    """Administrators see every camera; others their ``cameras`` patterns."""
    if user_role(user) == "admin":
        return CameraScope()
    return CameraScope.of(user.get("cameras") or [ALL])


def user_role(user: dict[str, Any]) -> str:
    role = user.get("role") or "admin"  # accounts from before roles existed were admins
    return role if role in ROLE_RANK else "viewer"


def public_user(name: str, user: dict[str, Any]) -> dict[str, Any]:
    return {
        "username": name,
        "role": user_role(user),
        "cameras": user_scope(user).patterns if user_role(user) != "admin" else [ALL],
        "disabled": bool(user.get("disabled")),
        "created": user.get("created"),
        "updated": user.get("updated"),
    }


class AuthStore:
    def __init__(
        self, r: redis.Redis, keys: Keys, *, time_cost: int = 3, memory_kib: int = 64 * 1024
    ) -> None:
        self.r, self.keys = r, keys
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    # ------------------------------------------------------------------ users
    def get_user(self, name: str) -> dict[str, Any] | None:
        if not name or len(name) > 64:
            return None
        raw = self.r.hget(self.keys.users, name)
        return json.loads(raw) if raw else None

    def set_password(
        self, name: str, password: str, role: str = "admin", *, end_sessions: bool = False
    ) -> None:
        """Set a password (creating the account with ``role`` if it does not exist).
        ``end_sessions``: every existing session of the account stops working."""
        hashed = self.hasher.hash(password)

        def change(users: dict[str, dict[str, Any]]) -> None:
            user = users.get(name) or {"created": time.time(), "role": role, "cameras": [ALL]}
            user["hash"] = hashed
            user["updated"] = time.time()
            if end_sessions:
                user["epoch"] = int(user.get("epoch", 0)) + 1
            users[name] = user

        self._change_users(change, [name])

    def role_of(self, name: str) -> str | None:
        """The account's role; None when the account no longer exists or is disabled."""
        user = self.get_user(name)
        if user is None or user.get("disabled"):
            return None
        return user_role(user)

    def list_users(self) -> list[dict[str, Any]]:
        users = self.r.hgetall(self.keys.users)
        return [public_user(n, json.loads(v)) for n, v in sorted(users.items())]

    def create_user(self, name: str, password: str, role: str, cameras: list[str]) -> dict:
        hashed = self.hasher.hash(password)

        def change(users: dict[str, dict[str, Any]]) -> None:
            if name in users:
                raise AccountError(f"user {name!r} already exists", 409)
            now = time.time()
            users[name] = {
                "created": now, "updated": now, "role": role, "cameras": cameras,
                "hash": hashed, "epoch": 0, "disabled": False,
            }  # fmt: skip

        self._change_users(change, [name])
        return public_user(name, self.get_user(name) or {})

    def update_user(
        self,
        name: str,
        *,
        password: str | None = None,
        role: str | None = None,
        cameras: list[str] | None = None,
        disabled: bool | None = None,
    ) -> dict[str, Any]:
        """Change an account.  A new password or disabling ends every session of the
        account at once; the last enabled administrator cannot be demoted or disabled."""
        hashed = self.hasher.hash(password) if password is not None else None

        def change(users: dict[str, dict[str, Any]]) -> None:
            user = users.get(name)
            if user is None:
                raise AccountError(f"no user named {name!r}", 404)
            if role is not None:
                user["role"] = role
            if cameras is not None:
                user["cameras"] = cameras
            if hashed is not None:
                user["hash"] = hashed
            if hashed is not None or (disabled and not user.get("disabled")):
                user["epoch"] = int(user.get("epoch", 0)) + 1
            if disabled is not None:
                user["disabled"] = disabled
            user["updated"] = time.time()

        self._change_users(change, [name])
        return public_user(name, self.get_user(name) or {})

    def delete_user(self, name: str) -> list[str]:
        """Delete an account and its API tokens (returns the revoked token ids)."""

        def change(users: dict[str, dict[str, Any]]) -> None:
            if name not in users:
                raise AccountError(f"no user named {name!r}", 404)
            del users[name]

        self._change_users(change, [name])
        revoked = [t["id"] for t in self.list_tokens(user=name)]
        if revoked:
            self.r.hdel(self.keys.tokens, *revoked)
        return revoked

    def _change_users(self, change: Callable[[dict], None], names: list[str]) -> None:
        """Apply ``change`` to the users table atomically (WATCH/MULTI), refusing any
        result without an enabled administrator (when there was one before)."""
        for _ in range(50):
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(self.keys.users)
                    users = {n: json.loads(v) for n, v in pipe.hgetall(self.keys.users).items()}
                    had_admin = _enabled_admins(users)
                    change(users)
                    if had_admin and not _enabled_admins(users):
                        raise AccountError(
                            "the last enabled administrator cannot be deleted, disabled or demoted",
                            409,
                        )
                    pipe.multi()
                    for n in names:
                        if n in users:
                            pipe.hset(self.keys.users, n, json.dumps(users[n]))
                        else:
                            pipe.hdel(self.keys.users, n)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise AccountError("accounts are being changed concurrently; try again", 409)

    def verify_password(self, name: str, password: str) -> bool:
        user = self.get_user(name)
        if not user or user.get("disabled"):
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
            self.set_password(name, password, user_role(user))
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
        user = {
            "created": time.time(), "role": "admin", "cameras": [ALL], "epoch": 0,
            "hash": self.hasher.hash(password),
        }  # fmt: skip
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
        rec = self.get_user(user) or {}
        self.r.set(
            self.keys.session(_sha(sid)),
            json.dumps({"user": user, "created": time.time(), "epoch": rec.get("epoch", 0)}),
            ex=ttl_s,
        )
        return sid

    def session_principal(self, sid: str) -> Principal | None:
        """The session's user, if the session exists, the account exists and is enabled,
        and no password change or disabling has happened since the session began."""
        if not sid or len(sid) > 128:
            return None
        raw = self.r.get(self.keys.session(_sha(sid)))
        if not raw:
            return None
        sess = json.loads(raw)
        user = self.get_user(sess["user"])
        if user is None or user.get("disabled"):
            return None
        if int(sess.get("epoch", 0)) != int(user.get("epoch", 0)):
            return None
        return Principal(
            user=sess["user"],
            via="session",
            role=user_role(user),
            scope=user_scope(user),
            credential=sid,
        )

    def session_user(self, sid: str) -> str | None:
        p = self.session_principal(sid)
        return p.user if p else None

    def delete_session(self, sid: str) -> None:
        if sid and len(sid) <= 128:
            self.r.delete(self.keys.session(_sha(sid)))

    # ----------------------------------------------------------------- tokens
    def create_token(
        self, name: str, user: str, role: str | None = None, cameras: list[str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A new token for ``user``; ``role``/``cameras`` narrow it (the caller checks
        they are not wider than the owner's: :meth:`Principal` scope ``covers``)."""
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        meta = {
            "id": token_id,
            "name": name,
            "user": user,
            "role": role,
            "cameras": cameras,
            "created": time.time(),
            "last_used": None,
            "sha256": _sha(secret),
        }
        self.r.hset(self.keys.tokens, token_id, json.dumps(meta))
        return f"{TOKEN_PREFIX}{token_id}_{secret}", _public(meta)

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every token, or only ``user``'s."""
        metas = [json.loads(v) for v in self.r.hvals(self.keys.tokens)]
        out = [_public(m) for m in metas if user is None or m.get("user") == user]
        return sorted(out, key=lambda t: t["created"])

    def get_token(self, token_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys.tokens, token_id[:64])
        return _public(json.loads(raw)) if raw else None

    def revoke_token(self, token_id: str) -> bool:
        return bool(self.r.hdel(self.keys.tokens, token_id))

    def token_principal(self, token: str, *, touch: bool = True) -> Principal | None:
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
        owner = self.get_user(meta["user"])
        if owner is None or owner.get("disabled"):
            return None  # a deleted or disabled account's tokens stop working at once
        # Coarse last-used stamp (at most once a minute) to keep reads cheap.
        now = time.time()
        if touch and (not meta.get("last_used") or now - meta["last_used"] > 60):
            meta["last_used"] = now
            self.r.hset(self.keys.tokens, token_id, json.dumps(meta))
        role = user_role(owner)
        if meta.get("role") in ROLE_RANK:
            role = lower_role(role, meta["role"])
        scope = user_scope(owner)
        if role != "admin" or meta.get("cameras"):
            scope = scope.narrowed(meta.get("cameras"))
        if role == "admin" and not scope.everything:
            # Administration reaches every camera (it could create a wider account): a
            # token limited to some cameras is at most an operator.
            role = "operator"
        return Principal(
            user=meta["user"],
            via="token",
            role=role,
            token_id=token_id,
            scope=scope,
            credential=token,
        )

    def recheck(self, principal: Principal) -> Principal | None:
        """The same credential checked again now (long-lived connections call this):
        None once it was revoked, logged out, or its account changed password, was
        disabled or deleted."""
        if principal.via == "token":
            return self.token_principal(principal.credential, touch=False)
        return self.session_principal(principal.credential)

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
            self.keys.login_failures_ip(ip),
            self.keys.login_failures_user(_sha(user.lower())[:32]),
        ]


class PasswordCheckBusy(Exception):
    """More password checks are waiting than ``login_max_pending_checks``."""


def _lower_priority() -> None:
    """Password-check threads yield the CPU to the threads serving other requests
    (Linux: a thread's nice value is its own)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


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
                self._pool = ThreadPoolExecutor(
                    self._workers, thread_name_prefix="argon2", initializer=_lower_priority
                )
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


def _enabled_admins(users: dict[str, dict[str, Any]]) -> int:
    return sum(1 for u in users.values() if user_role(u) == "admin" and not u.get("disabled"))


def _public(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: meta[k] for k in ("id", "name", "user", "created", "last_used")}
    out["role"] = meta.get("role")
    out["cameras"] = meta.get("cameras")
    return out


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
