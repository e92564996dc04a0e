"""Roles and camera scopes: who may see and do what (docs/users-and-roles.md).

* Roles, from most to least: ``admin`` (everything, always every camera), ``operator``
  (everything on its cameras except accounts and agent keys: stream and processing
  toggles, faces), ``viewer`` (read only, on its cameras).
* A camera scope is a list of patterns: ``*`` (every camera), a camera id
  (``shop/door``), or a client id (``shop``: every camera of that agent).  ``*`` inside
  a pattern matches any run of characters (``shop-*``, ``*/door``, ``lab/cam*``).
* An API token carries its owner's role and scope or a narrower one; at use the
  token's role is capped by the owner's current role and its scope intersected with
  the owner's current scope, so a token can never be wider than its owner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

ROLES = ("viewer", "operator", "admin")  # least to most
ROLE_RANK = {name: i for i, name in enumerate(ROLES)}
ALL = "*"
MAX_PATTERNS = 64
MAX_PATTERN_CHARS = 128
_PATTERN_CHARS = re.compile(r"^[^\s\x00?\[\]\\]+$")


def role_at_least(role: str | None, minimum: str) -> bool:
    return role in ROLE_RANK and ROLE_RANK[role] >= ROLE_RANK[minimum]


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def validate_pattern(pattern: str) -> str:
    """A scope pattern, or ValueError saying what is wrong with it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("camera patterns must be non-empty strings")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"camera pattern longer than {MAX_PATTERN_CHARS} characters")
    if not _PATTERN_CHARS.match(pattern) or not pattern.isprintable():
        raise ValueError(
            f"bad camera pattern {pattern!r}: no spaces, '?', '[', ']' or '\\'; "
            "'*' is the only wildcard"
        )
    if pattern.startswith("/") or pattern.endswith("/") or "//" in pattern:
        raise ValueError(f"bad camera pattern {pattern!r}: use 'client' or 'client/camera'")
    return pattern


def validate_patterns(patterns: Iterable[str]) -> list[str]:
    out = [validate_pattern(p) for p in patterns]
    if not out:
        raise ValueError("cameras must list at least one pattern ('*' for every camera)")
    if len(out) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} camera patterns")
    return sorted(set(out))


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _camera_form(pattern: str) -> str:
    """A client pattern means every camera of the matching clients."""
    return pattern if "/" in pattern else f"{pattern}/*"


@dataclass(frozen=True)
class CameraScope:
    """The cameras one principal may see (immutable; ``parts`` are AND-ed together, so
    a token's scope is its own patterns intersected with its owner's)."""

    parts: tuple[tuple[str, ...], ...] = ((ALL,),)

    @classmethod
    def of(cls, patterns: Iterable[str] | None) -> CameraScope:
        pats = tuple(sorted(set(patterns or ()))) or (ALL,)
        return cls((pats,))

    def narrowed(self, patterns: Iterable[str] | None) -> CameraScope:
        """This scope AND ``patterns`` (None: unchanged)."""
        if patterns is None:
            return self
        extra = CameraScope.of(patterns)
        return CameraScope(tuple(p for p in (*self.parts, *extra.parts) if ALL not in p))

    @property
    def everything(self) -> bool:
        return all(ALL in p for p in self.parts)

    @property
    def patterns(self) -> list[str]:
        """The patterns to show (the most restrictive part when several apply)."""
        parts = [p for p in self.parts if ALL not in p]
        return list(parts[-1]) if parts else [ALL]

    def allows(self, camera_id: str) -> bool:
        """May this principal see ``camera_id``?"""
        return all(
            ALL in pats or any(_glob(_camera_form(p)).fullmatch(camera_id) for p in pats)
            for pats in self.parts
        )

    def allows_client(self, client_id: str) -> bool:
        """May this principal see some camera of ``client_id`` (so the client itself)?"""
        return all(
            ALL in pats or any(_glob(p.split("/", 1)[0]).fullmatch(client_id) for p in pats)
            for pats in self.parts
        )

    def covers(self, patterns: Iterable[str]) -> bool:
        """Is every camera that ``patterns`` could match inside this scope?  (A token may
        only be given patterns its owner's scope covers.)"""
        for pats in self.parts:
            if ALL in pats:
                continue
            for p in patterns:
                want = _camera_form(p)
                if not any(_glob(_camera_form(g)).fullmatch(want) for g in pats):
                    return False
        return True
