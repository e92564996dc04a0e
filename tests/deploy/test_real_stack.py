"""The real deployment: images built, the compose stack up under Podman (or Docker).

Run by ``make test-deploy`` (marker ``deploy``; skipped by ``make test``, see
conftest.py). It builds both images from the Debian-built base (no registry), starts
the stack with the demo profile through scripts/compose.sh, and drives it from the
outside: login through the published port, scaling, container restarts and kills, a
second agent from the edge image over CURVE, then ``down -v``.
The tests share one stack and run in file order.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.redisutil import free_port
from tests.deploy.support import ROOT
from tests.helpers import wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(3600)]

PROJECT = "sentritest"
CENTRAL_IMAGE = "localhost/sentri:latest"
EDGE_IMAGE = "localhost/sentri-edge:latest"
CENTRAL_SERVICES = (
    "redis", "ingest", "detector", "faces", "analyst", "recorder", "archiver", "notifier",
    "gateway",
)  # fmt: skip
FIGURES = ROOT / "test-artifacts" / "deploy" / "figures.json"


def podman(*args: str, check: bool = True, timeout: float = 300) -> str:
    res = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {res.returncode}\n{res.stderr[-3000:]}")
    return res.stdout


def record(name: str, value: object) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[name] = value
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"[deploy] {name}: {value}")


class Stack:
    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.gateway_port, self.frame_port, self.control_port = (free_port() for _ in range(3))
        self.env.update(
            COMPOSE_PROJECT_NAME=PROJECT,
            REDIS_PASSWORD=secrets.token_hex(24),
            GRAFANA_ADMIN_PASSWORD=secrets.token_hex(12),  # compose 1.x wants it unused too
            GATEWAY_BIND="127.0.0.1",
            INGEST_BIND="127.0.0.1",
            GATEWAY_PORT=str(self.gateway_port),
            INGEST_FRAME_PORT=str(self.frame_port),
            INGEST_CONTROL_PORT=str(self.control_port),
            SENTRI_IMAGE_TAG="latest",
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.gateway_port}", timeout=10)

    def compose(self, *args: str, timeout: float = 3000) -> str:
        cmd = ["bash", str(ROOT / "scripts" / "compose.sh"), "--profile", "demo", *args]
        res = subprocess.run(
            cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: {res.returncode}\n{res.stderr[-4000:]}")
        return res.stdout + res.stderr

    def containers(self, service: str, all_: bool = False) -> list[str]:
        args = ["ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]
        args += ["--filter", f"label=com.docker.compose.service={service}"]
        return podman(*(args + (["-a"] if all_ else []))).split()

    def health(self, cid: str) -> str:
        out = podman("inspect", "--format", "{{.State.Health.Status}}", cid, check=False)
        return out.strip()

    def all_healthy(self) -> bool:
        for svc in CENTRAL_SERVICES:
            ids = self.containers(svc)
            if not ids or any(self.health(c) != "healthy" for c in ids):
                return False
        return True

    def api(self, path: str) -> object:
        resp = self.http.get(path)
        resp.raise_for_status()
        return resp.json()

    # --- what the workers say about ownership -------------------------------------
    def owned_counts(self) -> dict[str, int]:
        """replica id -> cameras owned, from each running detector's /metrics."""
        counts: dict[str, int] = {}
        for cid in self.containers("detector"):
            out = podman(
                "exec", cid, "python3", "-c",
                "import urllib.request;print(urllib.request.urlopen("
                "'http://127.0.0.1:9100/metrics',timeout=3).read().decode())",
                check=False,
            )  # fmt: skip
            for line in out.splitlines():
                if line.startswith("sentri_worker_owned_cameras{") and 'service="detector"' in line:
                    replica = line.split('replica="', 1)[1].split('"', 1)[0]
                    counts[replica] = int(float(line.rsplit(" ", 1)[1]))
        return counts

    def camera_owners(self) -> dict[str, tuple[str, float]]:
        """camera_id -> (owning detector replica, stats updated) from /api/cameras."""
        out = {}
        for cam in self.api("/api/cameras"):  # type: ignore[union-attr]
            st = (cam.get("worker_stats") or {}).get("detector") or {}
            out[cam["camera_id"]] = (st.get("replica", ""), float(st.get("updated", 0)))
        return out


def _project_leftovers() -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    return {
        "containers": podman("ps", "-aq", "--filter", label).split(),
        "volumes": [v for v in podman("volume", "ls", "-q").split() if v.startswith(PROJECT)],
        "networks": [n for n in podman("network", "ls", "-q").split() if n.startswith(PROJECT)],
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `make test-deploy` (scripts/ensure_deploy_tools.sh)")
    st = Stack()
    t0 = time.monotonic()
    # Images: the Debian base and both Sentri images (podman build, layer cache).
    subprocess.run(["bash", "scripts/build-base-image.sh"], cwd=ROOT, env=st.env, check=True)
    subprocess.run(["bash", "scripts/build-images.sh"], cwd=ROOT, env=st.env, check=True)
    record("build_s", round(time.monotonic() - t0, 1))
    try:
        yield st
    finally:
        subprocess.run(
            ["bash", "scripts/compose.sh", "--profile", "demo", "down", "-v", "--remove-orphans"],
            cwd=ROOT, env=st.env, capture_output=True, timeout=600, check=False,
        )  # fmt: skip
        st.http.close()


def test_images_are_non_root_carry_licences_and_no_build_secret(stack: Stack) -> None:
    sizes = {}
    for image in (CENTRAL_IMAGE, EDGE_IMAGE):
        info = json.loads(podman("image", "inspect", image))[0]
        sizes[image] = round(info["Size"] / 1e6)
        user = info["Config"].get("User", "")
        assert user and user.split(":")[0] not in ("root", "0"), (image, user)
        # The host CA bundle was mounted for the build only: not in any layer, not in
        # the history; the licence report is shipped.
        out = podman(
            "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
            "test ! -s /run/sentri-build/ca.crt && echo UID=$(id -u) && "
            "grep -c License /opt/sentri/licenses/THIRD_PARTY_LICENSES.md >/dev/null && "
            "python3 -c 'import json;print(\"PKGS=%d\" % len(json.load(open("
            "\"/opt/sentri/licenses/THIRD_PARTY_LICENSES.json\"))))'",
        )  # fmt: skip
        fields = dict(ln.split("=", 1) for ln in out.split() if "=" in ln)
        assert fields.get("UID") == "10001", out
        assert int(fields.get("PKGS", "0")) > 5, out
        history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        assert "BEGIN CERTIFICATE" not in history
        assert stack.env["REDIS_PASSWORD"] not in history
    lic = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "cat", CENTRAL_IMAGE,
        "/opt/sentri/licenses/THIRD_PARTY_LICENSES.md",
    )  # fmt: skip
    assert "ultralytics" in lic.lower() and "AGPL" in lic, "the AGPL part is reported"
    record("image_size_mb", sizes)


def test_up_healthy_login_and_demo_cameras_with_detections(stack: Stack) -> None:
    t0 = time.monotonic()
    stack.compose("up", "-d")
    wait_for(stack.all_healthy, timeout=600, interval=2, what="every service healthy")
    record("up_to_healthy_s", round(time.monotonic() - t0, 1))
    # Non-root, read-only root filesystem, ports on the loopback only.
    for svc in CENTRAL_SERVICES:
        for cid in stack.containers(svc):
            info = json.loads(podman("inspect", cid))[0]
            assert info["HostConfig"]["ReadonlyRootfs"] is True, svc
            uid = podman("exec", cid, "id", "-u").strip()
            assert uid != "0", svc
            for bindings in (info["HostConfig"].get("PortBindings") or {}).values():
                for b in bindings or []:
                    assert b["HostIp"] == "127.0.0.1", (svc, b)
    # The first-start admin password: written to the gateway's state volume.
    gw = stack.containers("gateway")[0]
    pw_file = podman("exec", gw, "cat", "/var/lib/sentri/state/admin-password.txt")
    password = pw_file.split("password:", 1)[1].strip()
    assert stack.http.get("/api/cameras").status_code == 401
    resp = stack.http.post("/api/auth/login", json={"username": "admin", "password": password})
    assert resp.status_code == 200, resp.text

    def demo_cameras() -> list[dict]:
        cams = [c for c in stack.api("/api/cameras") if c["client_id"] == "demo"]  # type: ignore[union-attr]
        return cams if len(cams) == 3 else []

    cams = wait_for(demo_cameras, timeout=180, interval=2, what="the 3 demo cameras")
    ids = {c["camera_id"] for c in cams}

    def detected() -> set[str]:
        latest = stack.api("/api/detections")["latest"]  # type: ignore[index]
        return ids if ids <= set(latest) else set()

    wait_for(detected, timeout=300, interval=2, what="detections of every demo camera")


def test_snapshots_and_recordings_through_the_shared_storage_volume(stack: Stack) -> None:
    """The detector writes event snapshots into the media store on the shared volume,
    the archiver stores the events, the recorder writes H.264 segments; the gateway
    (another container, same volume) serves all three."""
    t0 = time.monotonic()

    def event_with_snapshot() -> dict | None:
        page = stack.api("/api/events?type=object_entered&limit=100")
        events = page["events"]  # type: ignore[index]
        return next((e for e in events if e.get("snapshot_url")), None)

    event = wait_for(event_with_snapshot, timeout=180, interval=2, what="an event with a snapshot")
    resp = stack.http.get(event["snapshot_url"])
    assert resp.status_code == 200, (event, resp.text[:300])
    assert resp.headers["content-type"] == "image/jpeg"
    assert resp.content[:2] == b"\xff\xd8", "a JPEG"
    # in the media store on the shared volume (not in Redis), seen from the gateway
    gw = stack.containers("gateway")[0]
    found = podman(
        "exec", gw, "find", "/var/lib/sentri/storage/media", "-type", "f", "-name", "*.jpg"
    ).split()  # fmt: skip
    assert found, "no snapshot file in the media store"
    cam = event["camera_id"]

    def segments() -> list[dict]:
        view = stack.api(f"/api/recordings?camera_id={cam}")
        return view["segments"]  # type: ignore[index]

    segs = wait_for(segments, timeout=240, interval=3, what=f"a recorded segment of {cam}")
    assert segs[0]["bytes"] > 0 and segs[0]["frames"] > 0, segs[0]
    usage = stack.api("/api/storage")
    assert usage["used_bytes"] > 0 and cam in usage["cameras"], usage  # type: ignore[index]
    # the archiver put the events into the event store (on the same volume)
    db = podman("exec", gw, "stat", "-c", "%s", "/var/lib/sentri/storage/events.db").strip()
    assert int(db) > 0
    record("first_segment_after_detections_s", round(time.monotonic() - t0, 1))
    record("storage_used_bytes", usage["used_bytes"])  # type: ignore[index]


def _one_owner_each(stack: Stack, replicas: int) -> dict[str, int] | None:
    # A replica that never owned a camera has no gauge yet: it counts as owning none.
    # Rendezvous hashing may give all three cameras to one replica; what matters is
    # that the replicas' counts add up to the cameras and match who writes their stats.
    ids = stack.containers("detector")
    if len(ids) != replicas or any(stack.health(c) != "healthy" for c in ids):
        return None
    counts = stack.owned_counts()
    if sum(counts.values()) != 3:
        return None
    owners = stack.camera_owners()
    now = time.time()
    fresh = {c: r for c, (r, upd) in owners.items() if now - upd < 10}
    by_replica: dict[str, int] = {}
    for r in fresh.values():
        by_replica[r] = by_replica.get(r, 0) + 1
    if len(fresh) != 3 or any(by_replica.get(r, 0) != n for r, n in counts.items() if n):
        return None
    return counts


def test_scale_detectors_to_3_and_back_each_camera_owned_once(stack: Stack) -> None:
    stack.compose("up", "-d", "--no-recreate", "--scale", "detector=3")
    wait_for(lambda: len(stack.containers("detector")) == 3, timeout=120, what="3 detectors")
    counts = wait_for(lambda: _one_owner_each(stack, 3), timeout=300, interval=2,
                      what="3 replicas, each camera owned once")  # fmt: skip
    record("scaled_to_3_owned", sorted(counts.values()))
    stack.compose("up", "-d", "--no-recreate", "--scale", "detector=1")
    wait_for(lambda: len(stack.containers("detector")) == 1, timeout=120, what="1 detector")
    wait_for(lambda: _one_owner_each(stack, 1), timeout=120, interval=2,
             what="the one replica owns all 3 cameras")  # fmt: skip


def test_killed_detector_cameras_move(stack: Stack) -> None:
    stack.compose("up", "-d", "--no-recreate", "--scale", "detector=2")
    counts = wait_for(lambda: _one_owner_each(stack, 2), timeout=300, interval=2,
                      what="2 replicas sharing the cameras")  # fmt: skip
    victim = max(counts, key=lambda r: counts[r])
    cams = [c for c, (r, _) in stack.camera_owners().items() if r == victim]
    assert cams
    host = victim.split("-")[1]
    cid = next(c for c in stack.containers("detector") if c.startswith(host[:12]))
    podman("kill", "--signal", "KILL", cid)
    t0 = time.time()

    def moved() -> bool:
        owners = stack.camera_owners()
        return all(owners[c][0] != victim and owners[c][1] > t0 for c in cams)

    wait_for(moved, timeout=120, interval=1, what=f"cameras {cams} leaving {victim}")
    record("detector_kill_cameras_moved_s", round(time.time() - t0, 1))
    stack.compose("up", "-d", "--scale", "detector=1")


def _client(stack: Stack, client_id: str) -> dict:
    data = stack.api("/api/distributed/clients")
    return next((c for c in data["clients"] if c["client_id"] == client_id), {})  # type: ignore[index]


def _frames_received(stack: Stack, client_id: str) -> int:
    return sum(
        int((c.get("worker_stats") or {}).get("detector", {}).get("received", 0))
        for c in stack.api("/api/cameras")  # type: ignore[union-attr]
        if c["client_id"] == client_id
    )


def test_restart_ingest_agent_reconnects(stack: Stack) -> None:
    ingest = stack.containers("ingest")[0]
    podman("restart", "--time", "10", ingest)
    t0 = time.time()
    wait_for(lambda: stack.health(ingest) == "healthy", timeout=180, interval=2, what="ingest")

    def reconnected() -> bool:
        c = _client(stack, "demo")
        return c.get("status") == "online" and (c.get("last_seen") or 0) > t0 + 1

    wait_for(reconnected, timeout=180, interval=2, what="the demo agent back online")
    before = _frames_received(stack, "demo")
    wait_for(lambda: _frames_received(stack, "demo") > before, timeout=120, interval=2,
             what="frames flowing again after the ingest restart")  # fmt: skip
    record("ingest_restart_agent_back_s", round(time.time() - t0, 1))


def test_edge_image_as_second_agent_over_curve(stack: Stack, tmp_path: Path) -> None:
    keys = tmp_path / "edge-keys"
    keys.mkdir()
    os.chown(keys, 10001, 10001)
    vol = f"{keys}:/var/lib/sentri/keys:Z"
    podman("run", "--rm", "-v", vol, EDGE_IMAGE, "--show-key", "--key-dir", "/var/lib/sentri/keys")
    # Provision: the agent's public key into the agent-keys volume; ingest's key beside it.
    ingest = stack.containers("ingest")[0]
    server_key = podman("exec", ingest, "cat", "/var/lib/sentri/state/keys/ingest.public")
    (keys / "ingest.public").write_text(server_key)
    mount = podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{PROJECT}_agent-keys")
    target = Path(mount.strip()) / "edge2.public"
    target.write_text((keys / "edge.public").read_text())
    os.chmod(target, 0o644)
    name = f"{PROJECT}-edge2"
    podman(
        "run", "-d", "--rm", "--name", name, "--network", f"{PROJECT}_edge",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "-v", vol,
        EDGE_IMAGE, "--server", "ingest", "--server-key", "/var/lib/sentri/keys/ingest.public",
        "--key-dir", "/var/lib/sentri/keys", "--client-id", "edge2", "--source", "demo:bus",
    )  # fmt: skip
    try:
        wait_for(lambda: _client(stack, "edge2").get("status") == "online", timeout=180,
                 interval=2, what="edge2 online")  # fmt: skip
        wait_for(lambda: _frames_received(stack, "edge2") > 5, timeout=180, interval=2,
                 what="edge2's frames processed by the detector")  # fmt: skip
    finally:
        podman("stop", "--time", "5", name, check=False)


def test_down_v_leaves_nothing(stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans", timeout=600)
    left = _project_leftovers()
    assert left == {"containers": [], "volumes": [], "networks": []}, left
