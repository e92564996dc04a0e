"""Ingest configuration: the shared ``general``, ``redis`` and ``ingest`` sections.

The ``ingest`` section model is :class:`shared.config.IngestConfig` (the gateway and
``sentri up`` read it too), so it lives in ``shared/``; this module only loads the
three sections together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from shared.config import GeneralConfig, IngestConfig, RedisConfig, load_section


@dataclass(frozen=True)
class IngestSettings:
    general: GeneralConfig
    redis: RedisConfig
    ingest: IngestConfig


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    redis_url: str | None = None,
    ingest_overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> IngestSettings:
    """YAML file < env (``SENTRI_INGEST__*``, ``REDIS_URL``) < explicit arguments."""
    return IngestSettings(
        general=load_section(GeneralConfig, "general", config_file=config_file, env=env),
        redis=load_section(
            RedisConfig, "redis", config_file=config_file, env=env, overrides={"url": redis_url}
        ),
        ingest=load_section(
            IngestConfig, "ingest", config_file=config_file, env=env, overrides=ingest_overrides
        ),
    )
