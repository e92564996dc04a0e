"""Login rate limiting under concurrency, and bounded password-check work (issue 12)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from services.gateway.auth import AuthStore
from tests.helpers import wait_for
from tests.services.gateway.conftest import ADMIN, PASSWORD

CHECK_S = 0.2  # a password check made slow on purpose: the race window is wide open


class CheckCounter:
    """Wraps AuthStore.verify_password: counts checks and the most that ran at once."""

    def __init__(self, auth: AuthStore, check_s: float = CHECK_S) -> None:
        self.real = auth.verify_password
        self.check_s = check_s
        self.lock = threading.Lock()
        self.checked = 0
        self.running = 0
        self.max_running = 0
        auth.verify_password = self  # type: ignore[method-assign]

    def __call__(self, name: str, password: str) -> bool:
        with self.lock:
            self.checked += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(self.check_s)
            return self.real(name, password)
        finally:
            with self.lock:
                self.running -= 1


def _burst(url: str, bodies: list[dict]) -> list[int]:
    barrier = threading.Barrier(len(bodies))

    def one(body: dict) -> int:
        with httpx.Client(base_url=url, timeout=30) as c:
            barrier.wait(10)
            return c.post("/api/auth/login", json=body).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def test_concurrent_wrong_logins_check_at_most_the_limit(make_server):
    srv = make_server(login_max_failures=5, login_check_workers=4)
    counter = CheckCounter(srv.app.state.gw.auth)
    # The probe's burst: 50 at once, the right password at position 25.
    bodies = [{"username": ADMIN, "password": f"wrong-{i}"} for i in range(50)]
    bodies[25] = {"username": ADMIN, "password": PASSWORD}
    codes = _burst(srv.url, bodies)
    print(f"50 concurrent logins, limit 5: {counter.checked} checked, {codes.count(429)} got 429")
    assert counter.checked <= 5, counter.checked
    assert sum(1 for c in codes if c in (200, 401)) <= 5, codes
    assert codes.count(429) >= 45
    # (If the right one was among the first five, it signed in and cleared the counters.)
    # A burst of wrong passwords, then the right one: refused without being checked.
    before = counter.checked
    codes = _burst(srv.url, [{"username": ADMIN, "password": f"bad-{i}"} for i in range(50)])
    assert counter.checked - before <= 5 and codes.count(429) >= 45
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        resp = c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert counter.checked - before <= 5


def test_counter_never_locks_out_forever(make_settings, r, keys):
    """A counter left without a TTL (a lost EXPIRE) gets one on the next attempt."""
    auth = AuthStore(r, keys, time_cost=1, memory_kib=1024)
    auth.configure_rate_limit(3, 30)
    ip_key, user_key = auth._fail_keys("1.2.3.4", "bob")
    r.set(ip_key, 10)  # as a non-atomic INCR-then-EXPIRE could leave it
    assert auth.count_login_attempt("1.2.3.4", "bob") > 0
    assert 0 < r.ttl(ip_key) <= 30 and 0 < r.ttl(user_key) <= 30


def test_unknown_user_burst_runs_a_bounded_number_of_checks(make_server):
    """50 logins of unknown users: at most login_check_workers hashes at once, at most
    login_max_pending_checks admitted, the rest 503; /healthz answers meanwhile."""
    srv = make_server(login_max_failures=1000, login_check_workers=2, login_max_pending_checks=8)
    # 0.5 s per check: the 8 admitted take 2 s, far longer than 50 requests need to arrive.
    counter = CheckCounter(srv.app.state.gw.auth, check_s=0.5)
    done = threading.Event()
    health: list[int] = []

    def probe_health() -> None:
        wait_for(lambda: counter.running >= 2 or done.is_set(), 20, what="checks running")
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            health.append(c.get("/healthz").status_code)

    t = threading.Thread(target=probe_health)
    t.start()
    codes = _burst(srv.url, [{"username": f"ghost{i}", "password": "x" * 20} for i in range(50)])
    done.set()
    t.join(20)
    print(
        f"50 unknown-user logins: {counter.checked} checked, at most {counter.max_running} "
        f"at once, {codes.count(503)} got 503, /healthz {health}"
    )
    assert set(codes) <= {401, 503}, codes
    assert counter.max_running <= 2, counter.max_running
    assert codes.count(401) == counter.checked
    assert 2 <= counter.checked < 50
    assert codes.count(503) >= 1
    assert health == [200]
