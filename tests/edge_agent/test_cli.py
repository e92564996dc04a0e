"""The command line: ``python -m edge_agent`` / ``sentri-edge`` / start_camera_client.sh."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.cli import main
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def run_agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="this machine has a camera")
def test_discover_only_without_camera_says_so_and_how_to_use_demo():
    res = run_agent("--discover-only")
    assert res.returncode == 0, res.stderr
    assert "No cameras found" in res.stdout
    assert "--source demo:bus" in res.stdout


def test_discover_only_lists_cameras_and_unusable_sources_without_password():
    res = run_agent(
        "--discover-only",
        "--source", "demo:bus",
        "--source", "demo:zidane?static",
        "--source", "rtsp://admin:hunter2@127.0.0.1:9/stream",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("  ")]
    assert len(lines) == 3
    assert "demo-bus" in lines[0] and "640x480" in lines[0] and "backend=demo" in lines[0]
    assert "30.0 fps" in lines[0]
    assert "demo-zidane" in lines[1] and "640x480" in lines[1]
    assert "UNUSABLE" in lines[2] and "rtsp://admin:***@127.0.0.1:9/stream" in lines[2]
    assert "2 usable camera(s) of 3" in res.stdout
    assert "hunter2" not in res.stdout + res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_agent_cleanly(ingest, sig):
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "edge_agent",
            "--frame-endpoint", ingest.frame_url,
            "--control-endpoint", ingest.control_url,
            "--client-id", "cli-test",
            "--source", "demo:bus",
            "--fps", "10",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        wait_for(lambda: ingest.frames_of("cli-test/demo-bus"), timeout=20, what="frames")
        reg = ingest.of_type("register")[0]
        assert reg["cameras"][0]["name"] == "demo-bus"
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    assert rc == 0, err
    assert took < 4, took
    assert "edge agent ready" in err and "edge agent stopped" in err
    assert "Traceback" not in err
    wait_for(lambda: ingest.of_type("bye"), timeout=3, what="bye")


def test_wrapper_script_runs_the_agent():
    script = ROOT / "edge_agent" / "start_camera_client.sh"
    assert os.access(script, os.X_OK)
    res = subprocess.run(
        [str(script), "--discover-only", "--source", "demo:astronaut"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SENTRI_PYTHON": sys.executable},
    )
    assert res.returncode == 0, res.stderr
    assert "demo-astronaut" in res.stdout and "640x480" in res.stdout


def test_agent_needs_no_server_packages():
    code = (
        "import sys, edge_agent.cli, edge_agent.agent, edge_agent.sources; "
        "bad = [m for m in ('redis', 'fastapi', 'torch', 'ultralytics', 'skimage') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_show_key_creates_and_prints_the_agent_key(tmp_path, capsys):
    assert main(["--show-key", "--key-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    public = (tmp_path / "edge.public").read_text().strip()
    assert public in out and "fingerprint:" in out
    assert main(["--show-key", "--key-dir", str(tmp_path)]) == 0  # same key next time
    assert public in capsys.readouterr().out


def test_unreadable_server_key_exits_2(tmp_path, capsys):
    assert main(["--source", "demo:bus", "--server-key", str(tmp_path / "nope.public")]) == 2
    assert "server_key" in capsys.readouterr().err


def test_help_explains_sources(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "--server",
        "--source",
        "demo:SCENE",
        "--motion-gate",
        "--discover-only",
        "rtsp://",
    ):
        assert text in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--quality", "0"],
        ["--quality", "101"],
        ["--fps", "0"],
        ["--client-id", "has space"],
        ["--client-id", "a/b"],
    ],
)
def test_invalid_options_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--discover-only"])
    assert exc.value.code == 2


def test_bad_config_and_sources_exit_2_with_a_message(tmp_path, capsys):
    cfg = tmp_path / "sentri.yaml"
    cfg.write_text("edge:\n  quality: 150\n")
    assert main(["--config", str(cfg), "--discover-only"]) == 2
    assert "edge.quality" in capsys.readouterr().err
    cfg.write_text("edge:\n  colour: red\n")
    assert main(["--config", str(cfg), "--discover-only"]) == 2
    assert "edge.colour" in capsys.readouterr().err
    assert main(["--source", "demo:nowhere", "--discover-only"]) == 2
    assert "unknown demo scene" in capsys.readouterr().err
    assert main(["--frame-endpoint", "udp://x", "--discover-only"]) == 2


def test_no_usable_source_exits_1(capsys):
    assert main(["--source", "/no/such/clip.mp4"]) == 1
    err = capsys.readouterr().err
    assert "none of the sources delivered a frame" in err and "demo:bus" in err


def test_a_server_key_starting_with_a_dash_is_taken_in_the_equals_form():
    from edge_agent.cli import build_parser

    key = "-2@SDsckv3:U=:YA)vldm#gmTnln)998VOCao46{"  # a real z85 key CI drew once
    assert build_parser().parse_args([f"--server-key={key}"]).server_key == key
