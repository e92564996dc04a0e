"""Sentri ingest: frame intake (PULL), agent control (ROUTER), registry, fan-out (PUB).

``IngestServer`` is the service; ``python -m services.ingest`` (``sentri ingest``)
runs it.
"""

from services.ingest.server import IngestServer

__all__ = ["IngestServer"]
