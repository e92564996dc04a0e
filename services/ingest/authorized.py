"""``ingest.authorized_keys``: agent keys provisioned as files instead of clicked.

Like SSH's ``authorized_keys``: every entry is an agent's CURVE public key given
inline (40 z85 characters), a ``.public`` file, or a directory whose ``*.public``
files are each one key.  Ingest approves those keys in the agent key store
(:class:`shared.security.AgentKeyStore`) at start and again every
``authorized_keys_rescan_s``, so a key file dropped into the directory is accepted
without a restart.  An approved key is bound to the first client id that registers
with it, exactly like a key approved in the dashboard.

Two rules keep the dashboard in charge: a key an administrator *rejected* stays
rejected (a restart must not undo a revocation), and removing a key from the files
does not revoke it (reject it in the dashboard).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import zmq.utils.z85

from shared.config import ConfigError
from shared.security import AgentKeyStore, fingerprint

log = logging.getLogger(__name__)

#: Who the key store records as the approver of a provisioned key.
APPROVER = "authorized_keys"
#: Most keys one directory may hold (a bound on work per rescan, not a sizing hint).
MAX_KEYS = 10_000


def is_z85_key(text: str) -> bool:
    """True for a 40-character z85 string that decodes to a 32-byte CURVE key."""
    if len(text) != 40:
        return False
    try:
        return len(zmq.utils.z85.decode(text)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def _read_key_file(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError as exc:
        raise ConfigError(f"ingest.authorized_keys: cannot read {path}: {exc}") from None
    if not is_z85_key(text):
        raise ConfigError(
            f"ingest.authorized_keys: {path} does not hold a CURVE public key "
            "(expected 40 z85 characters, e.g. an agent's edge.public)"
        )
    return text


def resolve(entries: Sequence[str]) -> dict[str, str]:
    """Every key the entries name -> where it came from; ConfigError names a bad entry."""
    found: dict[str, str] = {}
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.glob("*.public") if p.is_file())
            if len(files) > MAX_KEYS:
                raise ConfigError(f"ingest.authorized_keys: {path} holds more than {MAX_KEYS} keys")
            for f in files:
                found.setdefault(_read_key_file(f), str(f))
        elif path.exists():
            found.setdefault(_read_key_file(path), str(path))
        elif is_z85_key(entry):
            found.setdefault(entry, "config")
        else:
            raise ConfigError(
                f"ingest.authorized_keys: {entry!r} is neither an existing file or directory "
                "nor a 40-character z85 public key"
            )
    return found


class AuthorizedKeys:
    """Applies ``ingest.authorized_keys`` to the key store; remembers what it applied."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = list(entries)
        self.keys: dict[str, str] = {}
        #: Keys already approved (or left rejected) by a previous :meth:`apply`.
        self.applied: set[str] = set()

    def load(self) -> dict[str, str]:
        """Read the entries again (raises ConfigError); returns key -> source."""
        self.keys = resolve(self.entries)
        return self.keys

    def apply(self, store: AgentKeyStore) -> list[str]:
        """Approve the keys not handled yet; returns the newly approved ones.

        Raises ``redis.RedisError`` when Redis is unreachable (the caller retries).
        """
        approved = []
        for key, source in self.keys.items():
            if key in self.applied:
                continue
            status = store.status(key)
            fp = fingerprint(key)
            if status == "rejected":
                log.warning(
                    "authorized key was rejected in the dashboard; it stays rejected",
                    extra={"fingerprint": fp, "source": source},
                )
            elif status != "approved":
                store.approve(key, decided_by=APPROVER, source=source)
                approved.append(key)
                log.info("agent key approved", extra={"fingerprint": fp, "source": source})
            self.applied.add(key)
        return approved
