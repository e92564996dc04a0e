"""Analysis providers, registered by ``type`` and selected by ``analyst.provider``.

A provider turns an :class:`~services.analyst.prompt.AnalysisRequest` into a
:class:`ProviderResult` or raises :class:`ProviderError`.  Retries, rate limits, the
circuit breaker and the budget live in the analyser, not here, so every provider
gets them.  Add one with::

    class MyVendorConfig(Section):
        type: Literal["myvendor"] = Field("myvendor", description="Provider type.")

    @register_provider("myvendor", config=MyVendorConfig)
    class MyProvider(Provider): ...

in one file ``providers/myvendor.py`` (imported at the bottom of this module): the
config class is registered with the provider and joins ``analyst.provider``'s
discriminated union (:func:`provider_config_union`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, Field

from services.analyst.prompt import AnalysisRequest
from services.analyst.scene import ThreatLevel


@dataclass(slots=True)
class ProviderResult:
    summary: str
    notable_objects: list[str]
    threat_level: ThreatLevel | None
    suggested_action: str | None
    model: str | None
    usage: dict[str, int] = field(default_factory=dict)


class ProviderError(Exception):
    """A failed analysis.  ``outcome`` is a metrics label; ``retryable`` says whether
    trying again later may succeed; ``retry_after`` is the server's requested delay (s)."""

    def __init__(
        self,
        outcome: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{outcome}: {message}")
        self.outcome = outcome
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class MissingCredentials(RuntimeError):
    """The provider cannot run without a secret that is not configured."""


class Provider:
    """Base class.  ``remote`` providers are subject to limits, breaker and budget."""

    name: ClassVar[str] = "base"
    remote: ClassVar[bool] = False

    def __init__(self, config: BaseModel, *, timeout_s: float) -> None:
        self.config = config
        self.timeout_s = timeout_s

    @property
    def model(self) -> str | None:
        return None

    def analyse(self, request: AnalysisRequest) -> ProviderResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


PROVIDERS: dict[str, type[Provider]] = {}
#: provider type -> its config model (a ``Section`` with ``type: Literal[name]``)
PROVIDER_CONFIGS: dict[str, type[BaseModel]] = {}


def register_provider(
    name: str, *, config: type[BaseModel]
) -> Callable[[type[Provider]], type[Provider]]:
    def deco(cls: type[Provider]) -> type[Provider]:
        if name in PROVIDERS and PROVIDERS[name] is not cls:
            raise ValueError(f"provider {name!r} registered twice")
        cls.name = name
        PROVIDERS[name] = cls
        PROVIDER_CONFIGS[name] = config
        return cls

    return deco


def provider_config_union() -> Any:
    """``analyst.provider``'s type: the registered config models, by ``type``."""
    models = tuple(PROVIDER_CONFIGS.values())
    union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007
    return Annotated[union, Field(discriminator="type")]


def build_provider(config: Any, *, timeout_s: float) -> Provider:
    """Instantiate the provider named by ``config.type`` (raises MissingCredentials)."""
    try:
        cls = PROVIDERS[config.type]
    except KeyError:
        raise ValueError(f"unknown analyst provider {config.type!r}") from None
    return cls(config, timeout_s=timeout_s)


# Register the built-in providers.
from services.analyst.providers import gemini, offline  # noqa: E402, F401
