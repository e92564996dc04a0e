"""The Gemini provider: the real google-genai SDK against the local fake server."""

from __future__ import annotations

import pytest

from services.analyst.config import GeminiProviderConfig
from services.analyst.prompt import build_request
from services.analyst.providers import MissingCredentials, ProviderError
from services.analyst.providers.gemini import GeminiProvider, resolve_api_key
from services.analyst.scene import SceneContext, SceneObject
from tests.services.analyst.conftest import API_KEY
from tests.services.analyst.fake_gemini import DEFAULT_ANSWER, FakeGemini, Reply


def _ctx() -> SceneContext:
    return SceneContext(
        camera_id="gate/north",
        trigger="object_entered",
        trigger_detail="person entered (track 7)",
        objects=[
            SceneObject("person", 7, 0.91),
            SceneObject("person", 9, 0.8),
            SceneObject("bus", 2),
        ],
        names=["Alice"],
    )


def _provider(url: str, key_file: str, **kw) -> GeminiProvider:
    cfg = GeminiProviderConfig(base_url=url, api_key_file=key_file, **kw)
    return GeminiProvider(cfg, timeout_s=5)


def test_success_sends_image_detections_and_schema(fake_gemini: FakeGemini, api_key_file, bus_jpeg):
    provider = _provider(fake_gemini.url, api_key_file)
    request = build_request(_ctx(), bus_jpeg, max_side=640, quality=85)
    result = provider.analyse(request)

    (rec,) = fake_gemini.wait_count(1)
    assert rec.problems == []
    assert rec.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert rec.image_size == (480, 640)  # 810x1080 photo, longest side now 640
    assert "2 × person (tracks 7, 9)" in rec.prompt
    assert "1 × bus (track 2)" in rec.prompt
    assert "Alice" in rec.prompt and "person entered (track 7)" in rec.prompt
    gen = rec.body["generationConfig"]
    assert gen["responseSchema"]["properties"]["threat_level"]["enum"] == [
        "none",
        "low",
        "medium",
        "high",
    ]
    thinking = gen["thinkingConfig"]  # the SDK writes some nested keys in snake_case
    assert thinking.get("thinkingBudget", thinking.get("thinking_budget")) == 0

    assert result.summary == DEFAULT_ANSWER["summary"]
    assert result.threat_level == "none"
    assert result.notable_objects == DEFAULT_ANSWER["notable_objects"]
    assert result.model == "gemini-2.5-flash"
    assert result.usage == {"prompt": 312, "output": 48}


def test_429_carries_retry_after_from_sdk_error_headers(fake_gemini, api_key_file, bus_jpeg):
    fake_gemini.queue(Reply.error(429, retry_after="7"), Reply.error(503, retry_delay="2.5s"))
    provider = _provider(fake_gemini.url, api_key_file)
    request = build_request(_ctx(), bus_jpeg, max_side=640, quality=85)

    with pytest.raises(ProviderError) as info:
        provider.analyse(request)
    assert (info.value.outcome, info.value.status, info.value.retryable) == (
        "rate_limited",
        429,
        True,
    )
    assert info.value.retry_after == 7.0

    with pytest.raises(ProviderError) as info:
        provider.analyse(request)  # no header: the RetryInfo in the error body is used
    assert (info.value.outcome, info.value.status, info.value.retryable) == (
        "server_error",
        503,
        True,
    )
    assert info.value.retry_after == 2.5


@pytest.mark.parametrize(
    "text, where",
    [
        ("The scene shows a bus.", "answer"),  # prose instead of JSON
        (
            '{"summary": "ok", "notable_objects": [], "threat_level": "severe", '
            '"suggested_action": "none"}',
            "threat_level",
        ),  # fmt: skip
        ('{"summary": "ok", "threat_level": "low", "suggested_action": "x"}', "notable_objects"),
    ],
)
def test_malformed_answers_are_rejected(fake_gemini, api_key_file, bus_jpeg, text, where):
    fake_gemini.queue(Reply.malformed(text))
    provider = _provider(fake_gemini.url, api_key_file)
    with pytest.raises(ProviderError) as info:
        provider.analyse(build_request(_ctx(), bus_jpeg, max_side=640, quality=85))
    assert info.value.outcome == "malformed"
    assert not info.value.retryable
    assert where in info.value.message


def test_connection_refused_is_a_retryable_connection_error(port_factory, api_key_file, bus_jpeg):
    provider = _provider(f"http://127.0.0.1:{port_factory()}", api_key_file)  # nothing listens
    with pytest.raises(ProviderError) as info:
        provider.analyse(build_request(_ctx(), bus_jpeg, max_side=640, quality=85))
    assert info.value.outcome == "connection_error"
    assert info.value.retryable


def test_wrong_key_is_a_client_error_not_retried(fake_gemini, tmp_path, bus_jpeg):
    key = tmp_path / "key"
    key.write_text("not-the-key")
    provider = _provider(fake_gemini.url, str(key))
    with pytest.raises(ProviderError) as info:
        provider.analyse(build_request(_ctx(), bus_jpeg, max_side=640, quality=85))
    assert (info.value.outcome, info.value.status, info.value.retryable) == (
        "client_error",
        400,
        False,
    )


def test_api_key_sources(tmp_path):
    cfg = GeminiProviderConfig()
    assert resolve_api_key(cfg, env={"GEMINI_API_KEY": " k1 \n"}) == "k1"
    assert resolve_api_key(cfg, env={}) is None
    path = tmp_path / "secret"
    path.write_text(API_KEY)
    with_file = GeminiProviderConfig(api_key_file=str(path))
    assert resolve_api_key(with_file, env={"GEMINI_API_KEY": "other"}) == API_KEY
    with pytest.raises(MissingCredentials, match="cannot read"):
        resolve_api_key(GeminiProviderConfig(api_key_file=str(tmp_path / "absent")), env={})
    with pytest.raises(MissingCredentials):
        GeminiProvider(GeminiProviderConfig(api_key_env="SENTRI_TEST_NO_SUCH_KEY"), timeout_s=1)
