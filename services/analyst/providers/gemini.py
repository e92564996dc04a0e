"""Google Gemini through the maintained ``google-genai`` SDK.

One synchronous request per analysis: the frame as an inline ``image/jpeg`` part,
the prompt with the detections, and a JSON response schema.  The SDK's own retries
are off (the analyser retries, honouring Retry-After, under the circuit breaker and
budget).  Errors are mapped to :class:`ProviderError` with a metrics outcome.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from services.analyst.limits import parse_retry_after, retry_info_delay
from services.analyst.prompt import SYSTEM_INSTRUCTION, AnalysisRequest
from services.analyst.providers import (
    MissingCredentials,
    Provider,
    ProviderError,
    ProviderResult,
    register_provider,
)
from services.analyst.scene import SceneAnalysis
from shared.config import Section

log = logging.getLogger(__name__)


def _http_exceptions() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeout, transport) exception classes of the HTTP libraries the SDK may use.

    google-genai sends with ``httpx2`` (pydantic's fork, its own namespace) when
    installed, else ``httpx``; their exception classes are unrelated, so catch both.
    """
    timeouts: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(mod.TimeoutException)
        transport.append(mod.TransportError)
    return tuple(timeouts), tuple(transport)


HTTP_TIMEOUTS, HTTP_TRANSPORT_ERRORS = _http_exceptions()


def resolve_api_key(config: GeminiProviderConfig, env: dict[str, str] | None = None) -> str | None:
    """The API key from ``api_key_file`` (if set) or the ``api_key_env`` variable."""
    env = dict(os.environ) if env is None else env
    if config.api_key_file:
        path = Path(config.api_key_file)
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise MissingCredentials(f"cannot read api_key_file {path}: {exc}") from None
        if not key:
            raise MissingCredentials(f"api_key_file {path} is empty")
        return key
    key = (env.get(config.api_key_env) or "").strip()
    return key or None


def _response_schema() -> Any:
    from google.genai import types

    text = types.Schema(type=types.Type.STRING)
    return types.Schema(
        type=types.Type.OBJECT,
        properties={
            "summary": types.Schema(
                type=types.Type.STRING, description="Two or three sentences on the scene."
            ),
            "notable_objects": types.Schema(
                type=types.Type.ARRAY, items=text, description="Short notable things."
            ),
            "threat_level": types.Schema(
                type=types.Type.STRING,
                enum=["none", "low", "medium", "high"],
                description="Threat level.",
            ),
            "suggested_action": types.Schema(
                type=types.Type.STRING, description="Operator action, or 'none'."
            ),
        },
        required=["summary", "notable_objects", "threat_level", "suggested_action"],
        property_ordering=["summary", "notable_objects", "threat_level", "suggested_action"],
    )


def parse_answer(text: str | None) -> SceneAnalysis:
    """Validate the model's JSON text; raises ProviderError('malformed')."""
    if not text or not text.strip():
        raise ProviderError("malformed", "empty answer")
    try:
        return SceneAnalysis.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "answer"
        raise ProviderError("malformed", f"{where}: {first['msg']}") from None


def _status_outcome(status: int) -> tuple[str, bool]:
    """(metrics outcome, retryable) of an HTTP error status."""
    if status == 429:
        return "rate_limited", True
    if status == 408:
        return "timeout", True
    if status >= 500:
        return "server_error", True
    return "client_error", False


class GeminiProviderConfig(Section):
    """Google Gemini through the google-genai SDK."""

    type: Literal["gemini"] = Field("gemini", description="Provider type.")
    model: str = Field(
        "gemini-2.5-flash",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._\-/]+$",
        description="Gemini model name.",
    )
    api_key_env: str = Field(
        "GEMINI_API_KEY",
        min_length=1,
        max_length=128,
        description="Environment variable holding the API key (read at start).",
    )
    api_key_file: str | None = Field(
        None,
        description="File holding the API key (e.g. a mounted secret); wins over the env var.",
    )
    base_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Override of the API endpoint (a proxy, or a local fake in tests).",
    )
    api_version: str = Field(
        "v1beta", pattern=r"^v[0-9a-z]+$", description="API version path segment."
    )
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature.")
    max_output_tokens: int = Field(
        1024, ge=64, le=8192, description="Upper bound of tokens in one answer."
    )
    thinking_budget: int | None = Field(
        0,
        ge=0,
        le=24576,
        description="Thinking tokens for 2.5 models (0 = off, fastest); null = model default.",
    )


@register_provider("gemini", config=GeminiProviderConfig)
class GeminiProvider(Provider):
    remote = True

    def __init__(self, config: GeminiProviderConfig, *, timeout_s: float) -> None:
        super().__init__(config, timeout_s=timeout_s)
        key = resolve_api_key(config)
        if not key:
            raise MissingCredentials(
                f"no Gemini API key: set {config.api_key_env} or analyst.provider.api_key_file"
            )
        from google import genai
        from google.genai import errors, types

        self._types = types
        self._errors = errors
        self._config: GeminiProviderConfig = config
        self._client = genai.Client(
            api_key=key,
            http_options=types.HttpOptions(
                base_url=config.base_url,
                api_version=config.api_version,
                timeout=max(1, int(timeout_s * 1000)),
            ),
        )
        thinking = (
            types.ThinkingConfig(thinking_budget=config.thinking_budget)
            if config.thinking_budget is not None
            else None
        )
        self._generation = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            response_mime_type="application/json",
            response_schema=_response_schema(),
            temperature=config.temperature,
            max_output_tokens=config.max_output_tokens,
            thinking_config=thinking,
            candidate_count=1,
        )

    @property
    def model(self) -> str:
        return self._config.model

    def analyse(self, request: AnalysisRequest) -> ProviderResult:
        types = self._types
        parts = []
        if request.image_jpeg is not None:
            parts.append(types.Part.from_bytes(data=request.image_jpeg, mime_type="image/jpeg"))
        parts.append(types.Part.from_text(text=request.prompt))
        try:
            response = self._client.models.generate_content(
                model=self._config.model,
                contents=[types.Content(role="user", parts=parts)],
                config=self._generation,
            )
        except self._errors.APIError as exc:
            raise self._api_error(exc) from None
        except HTTP_TIMEOUTS as exc:
            raise ProviderError("timeout", f"{type(exc).__name__}", retryable=True) from None
        except HTTP_TRANSPORT_ERRORS as exc:
            raise ProviderError(
                "connection_error", f"{type(exc).__name__}: {exc}", retryable=True
            ) from None
        except (ValueError, TypeError, KeyError) as exc:
            # Undecodable or unexpected body from the endpoint.
            raise ProviderError("bad_response", f"{type(exc).__name__}: {exc}") from None
        try:
            text = response.text
        except (ValueError, AttributeError) as exc:
            raise ProviderError("malformed", f"no text in answer: {exc}") from None
        if text is None:
            reason = ""
            if response.candidates:
                reason = str(response.candidates[0].finish_reason or "")
            elif response.prompt_feedback is not None:
                reason = str(response.prompt_feedback.block_reason or "")
            raise ProviderError("malformed", f"no answer text (finish/block reason {reason})")
        answer = parse_answer(text)
        usage: dict[str, int] = {}
        meta = response.usage_metadata
        if meta is not None:
            if meta.prompt_token_count is not None:
                usage["prompt"] = meta.prompt_token_count
            if meta.candidates_token_count is not None:
                usage["output"] = meta.candidates_token_count
            if getattr(meta, "thoughts_token_count", None):
                usage["thoughts"] = meta.thoughts_token_count
        return ProviderResult(
            summary=answer.summary,
            notable_objects=answer.notable_objects,
            threat_level=answer.threat_level,
            suggested_action=answer.suggested_action,
            model=response.model_version or self._config.model,
            usage=usage,
        )

    def _api_error(self, exc: Any) -> ProviderError:
        status = int(getattr(exc, "code", 0) or 0)
        outcome, retryable = _status_outcome(status)
        retry_after = None
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            retry_after = parse_retry_after(headers.get("retry-after"))
        if retry_after is None:
            retry_after = retry_info_delay(getattr(exc, "details", None))
        message = str(getattr(exc, "message", None) or getattr(exc, "status", None) or status)
        return ProviderError(
            outcome,
            f"HTTP {status}: {message[:300]}",
            retryable=retryable,
            retry_after=retry_after,
            status=status,
        )

    def close(self) -> None:
        try:
            self._client.close()
        except Exception as exc:  # closing must never take the service down
            log.debug("gemini client close failed", extra={"error": str(exc)})
