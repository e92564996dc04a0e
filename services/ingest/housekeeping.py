"""Housekeeping thread: stats flush, client health, cleanup, authorized keys.

Every job talks to Redis; a Redis error is logged once per burst and the job runs
again at its next turn.  Nothing here is on the frame path.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import redis

from services.ingest import metrics as m
from shared import registry
from shared.config import ConfigError

if TYPE_CHECKING:
    from services.ingest.server import IngestServer

log = logging.getLogger(__name__)

#: While Redis refuses the authorized_keys approvals, they are retried this often.
AUTHORIZED_RETRY_S = 2.0


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Housekeeping:
    def __init__(self, server: IngestServer) -> None:
        self.srv = server
        self._authorized_pending = False  # set while an apply waits for Redis
        self._authorized_scanned = time.monotonic()
        self._skewed: set[str] = set()  # clients flagged for their clock (logged once)

    def run(self) -> None:
        srv = self.srv
        now = time.monotonic()
        due = {"stats": now, "health": now, "cleanup": now + srv.cleanup_interval_s}
        every = {
            "stats": srv.cfg.stats_interval_s,
            "health": srv.health_interval_s,
            "cleanup": srv.cleanup_interval_s,
        }
        jobs = {"stats": self.flush_stats, "health": self.check_health, "cleanup": self.cleanup}
        due["clocks"], every["clocks"], jobs["clocks"] = now, srv.cfg.stats_interval_s, self.clocks
        if srv.secure and srv.cfg.authorized_keys:
            rescan = srv.cfg.authorized_keys_rescan_s
            due["authorized_keys"] = now + (rescan or AUTHORIZED_RETRY_S)
            every["authorized_keys"] = min(rescan or AUTHORIZED_RETRY_S, AUTHORIZED_RETRY_S)
            jobs["authorized_keys"] = self.authorized_job
        while not srv.stop_event.is_set():
            now = time.monotonic()
            for name, job in jobs.items():
                if now < due[name]:
                    continue
                due[name] = now + every[name]
                try:
                    job()
                except redis.RedisError as exc:
                    ok, suppressed = srv.burst.should_log("housekeeping_redis")
                    if ok:
                        log.warning(
                            "redis unavailable for housekeeping",
                            extra={"job": name, "error": str(exc), "suppressed": suppressed},
                        )
                except Exception:
                    log.exception("housekeeping job failed", extra={"job": name})
            srv.stop_event.wait(max(0.01, min(due.values()) - time.monotonic()))

    # ------------------------------------------------------------ authorized keys
    def apply_authorized_keys(self, reload: bool = True) -> None:
        """Approve ``ingest.authorized_keys`` (re-read first when ``reload``)."""
        srv = self.srv
        if srv.key_store is None or not srv.cfg.authorized_keys:
            return
        if reload:
            srv.count("authorized_keys_scans")
            try:
                srv.authorized.load()
            except ConfigError as exc:  # e.g. a half-written file: keep what was applied
                ok, suppressed = srv.burst.should_log("authorized_keys")
                if ok:
                    log.warning(
                        "cannot re-read authorized keys; keeping the approvals made",
                        extra={"error": str(exc), "suppressed": suppressed},
                    )
                return
        try:
            approved = srv.authorized.apply(srv.key_store)
        except redis.RedisError as exc:
            self._authorized_pending = True
            ok, suppressed = srv.burst.should_log("authorized_keys_redis")
            if ok:
                log.warning(
                    "cannot approve authorized keys yet (redis); retrying",
                    extra={"error": str(exc), "retry_s": AUTHORIZED_RETRY_S,
                           "suppressed": suppressed},
                )  # fmt: skip
            return
        self._authorized_pending = False
        srv.count("authorized_keys_approved", len(approved))

    def authorized_job(self) -> None:
        """Retry a failed approval (Redis was down); re-read the keys when due."""
        now = time.monotonic()
        rescan = self.srv.cfg.authorized_keys_rescan_s
        due = bool(rescan) and now - self._authorized_scanned >= rescan
        if self._authorized_pending or due:
            self._authorized_scanned = now
            self.apply_authorized_keys(reload=due)

    # ------------------------------------------------------------------- jobs
    def flush_stats(self) -> None:
        srv = self.srv
        snap = srv.stats.snapshot()
        if not snap:
            return
        cams = list(snap)
        try:
            pipe = srv.redis.pipeline(transaction=False)
            for cam in cams:
                pipe.sismember(srv.keys.cameras, cam)
            known = pipe.execute()
            for cam, exists in zip(cams, known, strict=True):
                if exists:  # never resurrect a camera removed from the registry
                    registry.update_camera(srv.redis, srv.keys, cam, snap[cam])
                elif srv.sessions.camera_registered(cam):
                    srv.stats.mark_dirty([cam])  # its registration is still queued
        except redis.RedisError:
            srv.stats.mark_dirty(cams)
            raise

    def check_health(self) -> None:
        srv = self.srv
        ids = sorted(_str(c) for c in srv.redis.smembers(srv.keys.clients))
        if not ids:
            return
        pipe = srv.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(srv.keys.client(cid), "last_seen", "status", "offline_at")
        now = time.time()
        for cid, (last_seen, stored, offline_at) in zip(ids, pipe.execute(), strict=True):
            status = registry.client_status(
                {"last_seen": last_seen, "offline_at": offline_at},
                now, srv.cfg.stale_after_s, srv.cfg.offline_after_s,
            )  # fmt: skip
            srv.client_status[cid] = status
            if status != stored:
                srv.redis.hset(srv.keys.client(cid), "status", status)
                registry.notify(
                    srv.redis, srv.keys, "client_status",
                    client_id=cid, status=status, previous=stored,
                )  # fmt: skip
                log.info(
                    "client status changed",
                    extra={"client_id": cid, "status": status, "previous": stored},
                )

    def clocks(self) -> None:
        """Publish each agent's clock offset; flag (log once, metric, registry) the
        agents off by more than ``ingest.limits.max_clock_offset_s``."""
        srv = self.srv
        bound = srv.cfg.limits.max_clock_offset_s
        if srv.key_cache is not None:
            refused = srv.key_cache.refused_pending
            for cap, n in refused.items():
                m.PENDING_KEYS_REFUSED.labels(cap).set(n)
        fanout = srv.fanout_auth
        if fanout is not None:
            for reason, n in dict(fanout.provider.refused).items():
                m.FANOUT_REFUSED.labels(reason).set(n)
        offsets = srv.clocks.snapshot()
        for cid, off in offsets.items():
            if srv.sessions.by_client(cid) is None:  # gone: bounded by live sessions
                srv.clocks.forget(cid)
                self._skewed.discard(cid)
                for gauge in (m.AGENT_CLOCK_OFFSET, m.AGENT_CLOCK_SKEWED):
                    try:
                        gauge.remove(cid)
                    except KeyError:
                        pass
                continue
            skewed = abs(off) > bound
            m.AGENT_CLOCK_OFFSET.labels(cid).set(off)
            m.AGENT_CLOCK_SKEWED.labels(cid).set(1 if skewed else 0)
            if skewed and cid not in self._skewed:
                log.warning(
                    "agent clock is off",
                    extra={"client_id": cid, "offset_s": round(off, 3), "bound_s": bound},
                )
            elif not skewed and cid in self._skewed:
                log.info(
                    "agent clock is back in bounds",
                    extra={"client_id": cid, "offset_s": round(off, 3)},
                )
            if skewed:
                self._skewed.add(cid)
            else:
                self._skewed.discard(cid)
            fields = {"clock_offset_s": round(off, 3), "clock_skewed": skewed}
            srv.writer.submit(
                f"clock {cid}",
                lambda cid=cid, fields=fields: registry.update_client(
                    srv.redis, srv.keys, cid, fields
                ),
                key=f"clock:{cid}",
            )

    def cleanup(self) -> None:
        srv = self.srv
        removed = registry.cleanup_inactive(srv.redis, srv.keys, srv.cfg.cleanup_after_s)
        for cid in removed:
            srv.client_status.pop(cid, None)
            srv.count("clients_removed")
            log.info(
                "removed inactive client",
                extra={"client_id": cid, "older_than_s": srv.cfg.cleanup_after_s},
            )
