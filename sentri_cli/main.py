"""The ``sentri`` command: runs any part of Sentri, or all of it (``sentri up``).

sentri up [--demo]            everything on this machine (embedded Redis unless REDIS_URL)
sentri ingest|detector|faces|analyst|gateway [...]
sentri models export [...]    export the detector model (ONNX) into the state dir
sentri faces add NAME photo…  manage the face gallery
sentri status                 clients and cameras known to Redis
"""

from __future__ import annotations

import importlib
import sys

from sentri_cli.services import SERVICES as SERVICE_TABLE

#: ``sentri <name>`` -> the module whose ``__main__.main(argv)`` runs it (from the table).
SERVICES = {s.name: s.module for s in SERVICE_TABLE}

_SERVICE_LINES = "\n".join(f"  {s.name:<11} {s.summary}" for s in SERVICE_TABLE)

HELP = f"""\
usage: sentri <command> [options]

Sentri: distributed multi-camera surveillance and video analytics.

commands:
  up          run everything on this machine: Redis (embedded unless REDIS_URL),
              ingest, every installed worker, the gateway; --demo adds an edge agent
              with demo cameras. Dashboard: http://127.0.0.1:5002
{_SERVICE_LINES}
  models      `sentri models export --format onnx`: export the detector model
  status      print the clients and cameras registered in Redis
  events      print events as JSON lines (consumer group, at-least-once)
  version     print the version

Run `sentri <command> --help` for a command's options. The edge agent is `sentri-edge`.
Configuration: --config FILE (YAML, one section per service) or SENTRI_<SECTION>__<FIELD>
environment variables; REDIS_URL selects an external Redis. On a `sentri up` machine,
`sentri status` and `sentri events` find its Redis through <state_dir>/runtime.json.
"""


def _run_service(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"{SERVICES[name]}.__main__")
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in SERVICES:
        return _run_service(cmd, rest)
    if cmd == "up":
        from sentri_cli.up import main as up_main

        return up_main(rest)
    if cmd == "models":
        if not rest or rest[0] in ("-h", "--help"):
            print("usage: sentri models export [--format onnx] [detector options]\n")
            print(
                "Export the configured detector model for fast CPU inference (cached in the state dir)."
            )
            return 0 if rest else 2
        if rest[0] != "export":
            print(f"sentri models: unknown subcommand {rest[0]!r} (try: export)", file=sys.stderr)
            return 2
        return _run_service("detector", rest)
    if cmd == "status":
        from sentri_cli.status import main as status_main

        return status_main(rest)
    if cmd == "events":
        from sentri_cli.events_cmd import main as events_main

        return events_main(rest)
    if cmd in ("version", "--version"):
        from importlib.metadata import version

        print(f"sentri {version('sentri')}")
        return 0
    print(f"sentri: unknown command {cmd!r}\n", file=sys.stderr)
    print(HELP, file=sys.stderr)
    return 2


def parser_commands() -> list[str]:
    """Every top-level command (used by deploy tests)."""
    return [*SERVICES, "up", "models", "status", "events", "version"]


if __name__ == "__main__":
    raise SystemExit(main())
