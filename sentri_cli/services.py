"""The services ``sentri`` runs: one table, read by ``sentri <service>``, its help and
``sentri up``.  Adding a service is one line in :data:`SERVICES`.

``tier`` fixes the order: ``sentri up`` starts tiers in ascending order and stops them
in descending order (agent, workers, gateway, ingest, Redis last), each tier fully
stopped before the next one gets its SIGTERM.  Services of one tier start and stop
together.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

TIER_REDIS = 0  #: the embedded redis-server: first up, last down
TIER_INGEST = 1  #: frame intake: everything downstream connects to it
TIER_GATEWAY = 2  #: API and dashboard
TIER_WORKER = 3  #: consumers of frames or streams (detector, faces, analyst, recorder, ...)
TIER_AGENT = 4  #: the demo edge agent: first down, so it says bye to a live ingest


@dataclass(frozen=True)
class Service:
    name: str
    #: ``python -m <module>`` runs it; ``sentri <name>`` calls ``<module>.__main__.main``.
    module: str
    tier: int
    #: Python modules it needs; ``sentri up`` skips the service (with a hint) without them.
    requires: tuple[str, ...] = ()
    #: One line for ``sentri --help``.
    summary: str = ""
    #: Run by ``sentri up`` unless ``--only``/``--without`` say otherwise.
    default: bool = True


SERVICES: tuple[Service, ...] = (
    Service("ingest", "services.ingest", TIER_INGEST, (), "frame intake from edge agents, agent control, fan-out to workers"),
    Service("detector", "services.detector", TIER_WORKER, ("ultralytics", "torch"), "YOLO object detection + tracking worker"),
    Service("faces", "services.faces", TIER_WORKER, ("face_recognition", "dlib"), "face recognition worker; `sentri faces add NAME photo.jpg` enrols"),
    Service("analyst", "services.analyst", TIER_WORKER, (), "Gemini scene analysis worker (offline summaries without a key)"),
    Service("recorder", "services.recorder", TIER_WORKER, ("av",), "H.264 segments per camera into the media store (events or continuous)"),
    Service("archiver", "services.archiver", TIER_WORKER, ("sqlalchemy",), "event history: the events stream into the event store; retention"),
    Service("gateway", "services.gateway", TIER_GATEWAY, (), "REST API, websockets and the web dashboard"),
    Service("notifier", "services.notifier", TIER_WORKER, ("paho",), "events to MQTT (Home Assistant discovery) and signed webhooks"),
)  # fmt: skip

BY_NAME = {s.name: s for s in SERVICES}


def available(service: Service) -> bool:
    """The service's package and the modules it needs are installed."""
    mods = (service.module, *service.requires)
    try:
        return all(importlib.util.find_spec(m) is not None for m in mods)
    except (ImportError, ValueError):
        return False
