"""Login flood against a real gateway with production argon2 settings.

    python -m bench.login_burst [--logins 50]

Starts a private Redis and the gateway (uvicorn, loopback), sends N concurrent logins
of unknown users, and reports what the gateway did: how many passwords it checked,
how many it refused as busy (503), its peak RSS, and /healthz latency meanwhile.
(Standalone: not part of ``make bench``.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn

from services.gateway.app import create_app
from services.gateway.config import GatewayConfig, GatewaySettings
from shared.config import GeneralConfig, IngestConfig, RedisConfig
from shared.redisutil import EmbeddedRedis, free_port


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=50)
    args = parser.parse_args()
    with EmbeddedRedis() as red, tempfile.TemporaryDirectory() as state:
        settings = GatewaySettings(
            gateway=GatewayConfig(
                admin_password="bench-admin-password",
                ingest_pub=f"tcp://127.0.0.1:{free_port()}",
                login_max_failures=1000,  # measure the check queue, not the rate limit
            ),
            redis=RedisConfig(url=red.url, prefix="bench:"),
            general=GeneralConfig(state_dir=state),
            ingest=IngestConfig(),
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        base, peak, health = _rss_mib(), [0.0], []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_mib())
                t0 = time.monotonic()
                httpx.get(url + "/healthz", timeout=60)
                health.append(time.monotonic() - t0)
                stop.wait(0.1)

        threading.Thread(target=sample, daemon=True).start()

        def login(i: int) -> int:
            body = {"username": f"ghost{i}", "password": "x" * 20}
            return httpx.post(url + "/api/auth/login", json=body, timeout=300).status_code

        t0 = time.monotonic()
        with ThreadPoolExecutor(args.logins) as pool:
            codes = list(pool.map(login, range(args.logins)))
        elapsed = time.monotonic() - t0
        stop.set()
        server.should_exit = True
        thread.join(10)
    health.sort()
    print(
        f"{args.logins} concurrent unknown-user logins in {elapsed:.1f} s: "
        f"{codes.count(401)} checked (401), {codes.count(503)} busy (503); "
        f"RSS {base:.0f} -> peak {peak[0]:.0f} MiB; /healthz median "
        f"{health[len(health) // 2] * 1000:.0f} ms, max {health[-1] * 1000:.0f} ms "
        f"({len(health)} probes); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
