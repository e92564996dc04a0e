"""`python -m services.faces ...` as real subprocesses (how `sentri faces` runs them)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.faces.__main__ import main
from tests.helpers import encode_jpeg, wait_for
from tests.services.faces.support import ROOT, background


def cli_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRI_")}
    # Env values are parsed as YAML and "abc:" would be a mapping, hence the quotes
    # (shared.config._parse_env_value; reported to the lead).
    env.update(
        REDIS_URL=redis_url, SENTRI_REDIS__PREFIX=json.dumps(prefix), PYTHONUNBUFFERED="1", **extra
    )
    return env


def faces_cli(
    env: dict[str, str], *args: str, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "services.faces", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.fixture
def restore_logging():
    """``main`` configures the root logger like a service does; undo it afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def in_process(redis_url, prefix, monkeypatch, restore_logging):
    """Run ``main(argv)`` in this process with the CLI's env."""
    for key in [k for k in os.environ if k.startswith("SENTRI_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SENTRI_REDIS__PREFIX", json.dumps(prefix))
    return main


def test_add_and_list_as_subprocesses(redis_url, prefix, tmp_path: Path, astronaut_jpeg) -> None:
    env = cli_env(redis_url, prefix)
    photo = tmp_path / "eileen.jpg"
    photo.write_bytes(astronaut_jpeg)
    not_photo = tmp_path / "notes.jpg"
    not_photo.write_text("shopping list")

    # With warnings as errors: face_recognition_models imports pkg_resources, whose
    # UserWarning the engine silences (unsilenced, it would abort the model import).
    out = faces_cli(
        env, "add", "Eileen Collins", str(photo), str(photo), python_flags=("-W", "error")
    )
    assert out.returncode == 0, out.stderr
    assert "enrolled 'Eileen Collins': 2 photo(s) added" in out.stdout

    out = faces_cli(env, "add", "Someone", str(not_photo))
    assert out.returncode == 1 and "photo 1 is not a readable image" in out.stderr

    out = faces_cli(env, "list", "--json")
    assert out.returncode == 0, out.stderr
    people = json.loads(out.stdout)
    assert [(p["name"], p["encodings"]) for p in people] == [("Eileen Collins", 2)]


def test_gallery_commands(in_process, capsys, tmp_path: Path, astronaut_jpeg) -> None:
    photo = tmp_path / "eileen.jpg"
    photo.write_bytes(astronaut_jpeg)
    empty_room = tmp_path / "room.jpg"
    empty_room.write_bytes(encode_jpeg(background()))

    def run(*argv: str) -> tuple[int, str, str]:
        code = in_process(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("list")
    assert code == 0 and "gallery is empty" in out
    assert run("add", "Eileen Collins", str(photo))[0] == 0
    code, _, err = run("add", "Someone", str(empty_room))
    assert code == 1 and "no face found" in err
    code, _, err = run("add", "Someone", str(tmp_path / "missing.jpg"))
    assert code == 1 and "cannot read" in err
    code, _, err = run("add", "unknown", str(photo))
    assert code == 2 and "reserved" in err
    code, _, err = run("add", "a/b", str(photo))
    assert code == 2 and "argument name" in err and "no '/'" in err

    code, out, _ = run("list")
    assert code == 0 and "ENCODINGS" in out and "Eileen Collins" in out

    code, out, _ = run("rename", "Eileen Collins", "Eileen")
    assert code == 0 and "renamed" in out
    code, _, err = run("rename", "nobody", "x")
    assert code == 1 and "no person named 'nobody'" in err
    assert run("delete", "Eileen")[0] == 0
    code, _, err = run("delete", "Eileen")
    assert code == 1 and "no person named" in err
    code, _, err = run("list", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 1 and "Redis at" in err


def test_usage_errors_exit_2(capsys, monkeypatch, restore_logging) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    for key in [k for k in os.environ if k.startswith("SENTRI_")]:
        monkeypatch.delenv(key)
    assert main(["list"]) == 2
    assert "no Redis" in capsys.readouterr().err
    monkeypatch.setenv("SENTRI_FACES__TOLERANCE", "3")
    assert main(["list", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "faces.tolerance" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for word in ("--config", "--redis-url", "add", "list", "delete", "rename", "run"):
        assert word in help_text


def test_run_serves_until_sigterm(redis_url, prefix, port_factory) -> None:
    env = cli_env(
        redis_url,
        prefix,
        SENTRI_WORKER__INGEST_PUB=f"tcp://127.0.0.1:{port_factory()}",
        SENTRI_WORKER__HEARTBEAT_S="0.2",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.faces", "--log-level", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any("faces worker ready" in line for line in lines) or proc.poll() is not None,
            timeout=60,
            what="ready log line",
        )
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    log = "".join(lines)
    assert "faces worker stopped" in log
    assert "Traceback" not in log
