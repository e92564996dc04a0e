"""``--server`` takes every form a user types (the seed's http://HOST:5002 included);
anything else is one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.cli import build_parser, load_config, main
from edge_agent.config import EdgeConfig
from edge_agent.target import ACCEPTED_FORMS, ServerError, parse_server

ROOT = Path(__file__).resolve().parents[2]
BAD = ["http://", "ftp://x", "host:99999", "", "http://bad host:5002", "host:", "a/b",
       "http://u:pw@h:5002", "tcp://h:5555/x", "[::1", "http://[::1:5002", "1:2:3", "[fe80::1%eth0]:5555"]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "kind", "frames", "control", "gateway"),
    [
        ("10.0.0.2", "ingest", "tcp://10.0.0.2:5555", "tcp://10.0.0.2:5556", None),
        ("cams.lan:6000", "ingest", "tcp://cams.lan:6000", "tcp://cams.lan:6001", None),
        ("tcp://10.0.0.2", "ingest", "tcp://10.0.0.2:5555", "tcp://10.0.0.2:5556", None),
        ("tcp://h:7000", "ingest", "tcp://h:7000", "tcp://h:7001", None),
        ("[::1]:7000", "ingest", "tcp://[::1]:7000", "tcp://[::1]:7001", None),
        ("::1", "ingest", "tcp://[::1]:5555", "tcp://[::1]:5556", None),
        ("http://10.0.0.2:5002", "gateway", None, None, "http://10.0.0.2:5002"),
        ("HTTPS://gw.example/sentri/", "gateway", None, None, "https://gw.example/sentri"),
        ("http://[fd00::1]:5002", "gateway", None, None, "http://[fd00::1]:5002"),
    ],
)
def test_accepted_forms(value, kind, frames, control, gateway) -> None:
    target = parse_server(value)
    assert (target.kind, target.gateway_url) == (kind, gateway)
    cfg = EdgeConfig(server=value)
    assert cfg.gateway_url == gateway
    if frames:
        assert (cfg.frames_url, cfg.control_url) == (frames, control)


@pytest.mark.parametrize("value", BAD)
def test_bad_server_is_one_line_and_exit_2(value, capsys) -> None:
    with pytest.raises(ServerError):
        parse_server(value)
    assert main(["--server", value, "--source", "demo:bus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sentri-edge: --server ")
    assert ACCEPTED_FORMS in err and "Traceback" not in err


def test_bad_server_from_the_real_command_and_the_wrapper_script() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SENTRI_PYTHON": sys.executable}
    for cmd in ([sys.executable, "-m", "edge_agent"], [str(ROOT / "edge_agent/start_camera_client.sh")]):  # fmt: skip
        res = subprocess.run(
            [*cmd, "--server", "http://bad host:5002", "--client-id", "camera_machine_1"],
            capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and "accepted forms" in res.stderr
        assert "Traceback" not in res.stderr and "ready" not in res.stdout + res.stderr
    # the same value from the environment: still a clear error naming the field
    res = subprocess.run(
        [sys.executable, "-m", "edge_agent", "--source", "demo:bus"], capture_output=True,
        text=True, timeout=60, cwd=ROOT, env={**env, "SENTRI_EDGE__SERVER": "ftp://x"},
    )  # fmt: skip
    assert res.returncode == 2 and "edge.server" in res.stderr and "Traceback" not in res.stderr


def test_the_seeds_one_liner_and_options_parse() -> None:
    args = build_parser().parse_args(
        [
            "--server",
            "http://MAIN_SERVER_IP:5002",
            "--client-id",
            "camera_machine_1",
            "--max-cameras",
            "2",
            "--quality",
            "70",
            "--fps",
            "10",
        ]  # fmt: skip
    )
    cfg = load_config(args)
    assert cfg.gateway_url == "http://MAIN_SERVER_IP:5002"
    assert (cfg.client_id, cfg.max_cameras, cfg.quality, cfg.fps) == ("camera_machine_1", 2, 70, 10)


def test_discover_only_with_a_gateway_server_needs_no_gateway(capsys) -> None:
    code = main(["--server", "http://127.0.0.1:9", "--discover-only", "--source", "demo:bus",
                 "--source", "demo:zidane", "--max-cameras", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "Found 1 usable camera(s)" in out and "skipped: --max-cameras 1" in out


def test_gateway_port_without_scheme_gets_a_hint(capsys) -> None:
    assert main(["--server", "10.0.0.2:5002", "--discover-only", "--source", "demo:bus"]) == 0
    assert "--server http://10.0.0.2:5002" in capsys.readouterr().err


@given(st.text(max_size=80) | st.from_regex(r"(https?|tcp|ftp)://[\[\]:a-z0-9. @/?#%-]{0,40}"))
@settings(max_examples=400, deadline=None)
def test_any_value_is_parsed_or_refused_with_server_error(value: str) -> None:
    """Whatever a user types, the answer is a target or a ServerError, never a crash."""
    try:
        target = parse_server(value)
    except ServerError as exc:
        assert ACCEPTED_FORMS in str(exc) and "\n" not in str(exc)
        return
    if target.kind == "ingest":
        frames, control = target.endpoints(5555, 5556)
        assert EdgeConfig(frame_endpoint=frames, control_endpoint=control)  # valid endpoints
    else:
        assert target.gateway_url and target.gateway_url.startswith(("http://", "https://"))


def test_unwritable_key_dir_is_a_message_not_a_traceback(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["--server", "127.0.0.1:9", "--server-key", "k" * 40, "--key-dir",
                 str(blocker / "keys"), "--source", "demo:bus"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "sentri-edge: [Errno" in err and "Traceback" not in err
