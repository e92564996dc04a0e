"""The analyst end to end: real worker runtime, real ZeroMQ frames, real Redis streams,
the real google-genai SDK against the local fake Gemini server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pytest
import zmq
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

from services.analyst.config import AnalystConfig, GeminiProviderConfig
from services.analyst.processor import AnalystProcessor
from services.analyst.providers.offline import OFFLINE_LABEL
from shared.config import RedisConfig, WorkerConfig
from shared.keys import Keys
from shared.redisutil import now_ms, parse_entry, publish_record
from shared.registry import register_client
from shared.worker import WorkerRuntime
from tests.helpers import FramePublisher, wait_for
from tests.services.analyst.conftest import API_KEY
from tests.services.analyst.fake_gemini import DEFAULT_ANSWER, DroppingServer, FakeGemini, Reply

CAM = "gate/north"
OTHER_CAM = "gate/south"


class AnalysisRecord(BaseModel):
    """The documented ``analysis`` stream schema, as a consumer would validate it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["analysis"]
    camera_id: str
    ts: int
    trigger: str
    provider: Literal["gemini", "offline"]
    model: str | None
    latency_ms: float
    summary: str
    notable_objects: list[str]
    threat_level: Literal["none", "low", "medium", "high"] | None
    suggested_action: str | None
    error: str | None
    fallback_reason: str | None
    attempts: int
    trigger_event_id: str | None
    frame_seq: int | None
    frame_ts: int | None
    image_size: list[int] | None
    object_counts: dict[str, int]
    names: list[str]
    usage: dict[str, int] | None


class AnalysisEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["analysis"]
    event_id: str
    camera_id: str
    ts: int
    provider: Literal["gemini", "offline"]
    summary: str
    threat_level: str | None
    trigger: str
    analysis_id: str


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Service:
    runtime: WorkerRuntime
    processor: AnalystProcessor
    publisher: FramePublisher
    r: Any
    keys: Keys

    def analyses(self) -> list[dict[str, Any]]:
        entries = self.r.xrange(self.keys.stream("analysis"))
        return [parse_entry(i, f) for i, f in entries]

    def wait_analyses(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (a := self.analyses()) and len(a) >= n and a,
            timeout=timeout,
            what=f"{n} analysis records",
        )

    def events(self, etype: str = "analysis") -> list[dict[str, Any]]:
        entries = self.r.xrange(self.keys.stream("events"))
        return [e for e in (parse_entry(i, f) for i, f in entries) if e.get("type") == etype]

    def trigger(self, etype: str = "object_entered", cam: str = CAM, **fields: Any) -> str:
        record = {"type": etype, "camera_id": cam, "ts": now_ms(), **fields}
        if etype == "object_entered":
            record.setdefault("class", "person")
            record.setdefault("track_id", 7)
        return publish_record(self.r, self.keys, "events", record, maxlen=1000, latest=False)

    def detections(self, objects: list[dict[str, Any]], cam: str = CAM) -> None:
        record = {"type": "detections", "camera_id": cam, "ts": now_ms(), "objects": objects}
        publish_record(self.r, self.keys, "detections", record, maxlen=1000)

    def processed(self, cam: str = CAM) -> int:
        st = self.runtime.stats.get(cam)
        return st.processed if st else 0


PEOPLE = [
    {"class": "person", "confidence": 0.91, "bbox": [50, 400, 250, 900], "track_id": 7},
    {"class": "person", "confidence": 0.86, "bbox": [660, 390, 810, 880], "track_id": 9},
    {"class": "bus", "confidence": 0.88, "bbox": [0, 230, 800, 750], "track_id": 2},
]


@pytest.fixture
def base_config(fake_gemini: FakeGemini, api_key_file: str) -> dict[str, Any]:
    """Small limits and fast backoff; periodic analysis effectively off."""
    return {
        "provider": GeminiProviderConfig(base_url=fake_gemini.url, api_key_file=api_key_file),
        "min_interval_s": 3600,
        "event_cooldown_s": 0,
        "timeout_s": 5,
        "max_retries": 2,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "breaker_failures": 3,
        "global_rate_per_min": 6000,
        "global_burst": 100,
        "camera_rate_per_min": 6000,
        "camera_burst": 100,
        "daily_budget": 0,
    }


@pytest.fixture
def start_service(
    redis_config: RedisConfig, r, keys: Keys, port_factory, bus_jpeg: bytes
) -> Iterator[Callable[..., Service]]:
    """Start the analyst on real sockets, with a pump publishing the bus photo at ~10 fps."""
    ctx = zmq.Context()
    stop = threading.Event()
    started: list[tuple[WorkerRuntime, FramePublisher, threading.Thread]] = []

    def start(config: AnalystConfig, cams: tuple[str, ...] = (CAM,)) -> Service:
        publisher = FramePublisher(ctx, port_factory())
        register_client(r, keys, {"client_id": "gate"}, [{"name": c.split("/")[1]} for c in cams])
        processor = AnalystProcessor(config)
        runtime = WorkerRuntime(
            processor,
            redis_config=redis_config,
            worker_config=WorkerConfig(
                ingest_pub=publisher.endpoint, heartbeat_s=0.1, member_ttl_s=1.0
            ),
            default_enabled=config.process_by_default,
            zmq_context=ctx,
        )
        runtime.start()
        svc = Service(runtime, processor, publisher, r, keys)

        def pump() -> None:
            while not stop.wait(0.1):
                publisher.publish(CAM, img=np.zeros((1080, 810, 3), np.uint8), jpeg=bus_jpeg)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        started.append((runtime, publisher, thread))
        wait_for(lambda: CAM in runtime.owned, timeout=10, what="camera ownership")
        assert processor.listener is not None
        assert processor.listener.ready.wait(10)
        wait_for(lambda: svc.processed() > 0, timeout=10, what="first frame processed")
        return svc

    yield start
    stop.set()
    for runtime, publisher, thread in started:
        thread.join(2)
        runtime.stop()
        publisher.close()
    ctx.destroy(linger=0)


@contextmanager
def frames_keep_flowing(svc: Service, at_least: int = 5) -> Iterator[None]:
    """Asserts the runtime processed at least ``at_least`` more frames meanwhile."""
    before = svc.processed()
    yield
    wait_for(lambda: svc.processed() >= before + at_least, timeout=10, what="frames flowing")


# ------------------------------------------------------------------------ tests


def test_event_triggers_gemini_analysis_with_frame_and_detections(
    start_service, base_config, fake_gemini: FakeGemini, r, keys
):
    svc = start_service(AnalystConfig(**base_config))
    svc.detections(PEOPLE)
    for name in ("Alice", "unknown"):  # one record per face, as the faces worker writes
        face = {"type": "face", "camera_id": CAM, "ts": now_ms(), "name": name}
        publish_record(r, keys, "faces", face, maxlen=1000)
    svc.trigger("object_entered", event_id="ev-9", **{"class": "person", "track_id": 9})

    (raw,) = svc.wait_analyses(1)
    rec = AnalysisRecord.model_validate(raw)
    assert rec.camera_id == CAM and rec.trigger == "object_entered"
    assert rec.trigger_event_id == "ev-9"
    assert (rec.provider, rec.model, rec.error, rec.fallback_reason) == (
        "gemini",
        "gemini-2.5-flash",
        None,
        None,
    )
    assert rec.summary == DEFAULT_ANSWER["summary"]
    assert rec.threat_level == "none" and rec.notable_objects == DEFAULT_ANSWER["notable_objects"]
    assert rec.object_counts == {"person": 2, "bus": 1} and rec.names == ["Alice"]
    assert rec.image_size == [480, 640] and rec.attempts == 1
    assert rec.usage == {"prompt": 312, "output": 48}

    (req,) = fake_gemini.wait_count(1)
    assert req.problems == []
    assert req.model == "gemini-2.5-flash" and req.image_size == (480, 640)
    assert "2 × person (tracks 7, 9)" in req.prompt and "1 × bus (track 2)" in req.prompt
    assert "Recognised people (face recognition): Alice" in req.prompt
    assert "Unrecognised faces: 1" in req.prompt
    assert "person entered (track 9)" in req.prompt

    # The event is written after the record (a second Redis command).
    (raw_event,) = wait_for(lambda: svc.events("analysis"), 10, what="the analysis event")
    event = AnalysisEvent.model_validate(raw_event)
    assert event.analysis_id == rec.id and event.camera_id == CAM
    assert event.summary == rec.summary and event.provider == "gemini"
    latest = r.get(keys.latest("analysis", CAM))
    assert latest is not None and DEFAULT_ANSWER["summary"] in latest


def test_only_trigger_events_of_owned_cameras_cause_requests(
    start_service, base_config, fake_gemini: FakeGemini
):
    svc = start_service(AnalystConfig(**base_config))
    svc.detections(PEOPLE)
    svc.trigger("object_entered", **{"class": "dog"})  # not a trigger class
    svc.trigger("object_left")  # not a trigger type
    svc.trigger("object_entered", cam="elsewhere/cam")  # not owned by this replica
    svc.trigger("face_recognized", name="Alice")

    (rec,) = svc.wait_analyses(1)
    # Events are handled in stream order, so the three earlier ones were already dropped.
    assert rec["trigger"] == "face_recognized" and rec["names"] == ["Alice"]
    assert fake_gemini.count() == 1
    assert "face recognised: Alice" in fake_gemini.received[0].prompt


def test_429_retry_after_is_honoured_then_success(start_service, base_config, fake_gemini):
    fake_gemini.queue(Reply.error(429, retry_after="1"))
    svc = start_service(AnalystConfig(**base_config))  # backoff alone would wait <= 0.05 s
    svc.detections(PEOPLE)
    retries_before = metric("sentri_analyst_retries_total")
    svc.trigger()

    (rec,) = svc.wait_analyses(1)
    assert rec["provider"] == "gemini" and rec["error"] is None and rec["attempts"] == 2
    first, second = fake_gemini.wait_count(2)
    assert first.reply_status == 429 and second.reply_status == 200
    assert second.at - first.at >= 0.95, "Retry-After: 1 was not honoured"
    assert metric("sentri_analyst_retries_total") == retries_before + 1


def test_malformed_answer_is_an_error_record_and_service_continues(
    start_service, base_config, fake_gemini
):
    fake_gemini.queue(Reply.malformed("A bus and two people."))
    svc = start_service(AnalystConfig(**base_config))
    svc.detections(PEOPLE)
    malformed_before = metric(
        "sentri_analyst_requests_total", provider="gemini", outcome="malformed"
    )

    with frames_keep_flowing(svc):
        svc.trigger()
        (bad,) = svc.wait_analyses(1)
    rec = AnalysisRecord.model_validate(bad)
    assert rec.error is not None and "malformed" in rec.error
    assert rec.fallback_reason == "model_error" and rec.provider == "offline"
    assert rec.summary.startswith(OFFLINE_LABEL) and "2 × person (tracks 7, 9)" in rec.summary
    assert rec.threat_level is None and rec.attempts == 1  # malformed answers are not retried
    assert metric("sentri_analyst_requests_total", provider="gemini", outcome="malformed") == (
        malformed_before + 1
    )

    svc.trigger()
    _, good = svc.wait_analyses(2)
    assert good["provider"] == "gemini" and good["error"] is None
    assert good["summary"] == DEFAULT_ANSWER["summary"]
    assert fake_gemini.count() == 2


def test_slow_model_never_holds_frames_and_events_coalesce(start_service, base_config, fake_gemini):
    # Slow on purpose, with room for a loaded box: everything up to the check that no
    # analysis exists yet must happen while this call runs.
    fake_gemini.queue(Reply(text=json.dumps(DEFAULT_ANSWER), delay_s=6.0))
    svc = start_service(AnalystConfig(**{**base_config, "timeout_s": 20}))
    svc.detections(PEOPLE)
    superseded_before = metric("sentri_analyst_jobs_superseded_total")
    svc.trigger()
    fake_gemini.wait_count(1)  # the call is in flight now
    with frames_keep_flowing(svc, at_least=5):
        for track in (11, 12, 13):  # more entries while the camera's call runs
            svc.trigger(track_id=track)
    wait_for(
        lambda: metric("sentri_analyst_jobs_superseded_total") >= superseded_before + 2,
        timeout=5,
        what="events coalesced into one pending job",
    )
    assert svc.analyses() == []  # the frames above flowed while the model was still busy
    first, second = svc.wait_analyses(2, timeout=20)
    assert first["provider"] == second["provider"] == "gemini"
    assert first["latency_ms"] >= 5900
    assert fake_gemini.count() == 2  # one call for the three queued events, not three


def test_dead_server_opens_circuit_then_half_open_trial_recovers(
    start_service, base_config, port_factory
):
    port = port_factory()
    dead = DroppingServer(port).start()
    # The open-circuit checks below must finish inside the cool-down: room for a slow box.
    cfg = dict(base_config, max_retries=1, breaker_failures=2, breaker_cooldown_s=8.0)
    cfg["provider"] = base_config["provider"].model_copy(update={"base_url": dead.url})
    svc = start_service(AnalystConfig(**cfg))
    svc.detections(PEOPLE)

    def analyse(n: int) -> dict[str, Any]:
        svc.trigger()
        return svc.wait_analyses(n)[-1]

    with frames_keep_flowing(svc, at_least=5):
        first, second = analyse(1), analyse(2)
    for rec in (first, second):
        assert rec["fallback_reason"] == "model_error" and rec["attempts"] == 2
        assert "connection_error" in rec["error"] and rec["provider"] == "offline"
    assert dead.connections == 4  # 2 analyses x (1 try + 1 retry)
    assert svc.processor.analyzer.breaker.state == "open"
    assert metric("sentri_analyst_breaker_state") == 1

    # Open: analyses still come (offline, labelled) but nothing reaches the network,
    # and the runtime keeps receiving and processing frames.
    with frames_keep_flowing(svc, at_least=3):
        third, fourth = analyse(3), analyse(4)
    for rec in (third, fourth):
        assert rec["fallback_reason"] == "circuit_open" and rec["error"] is None
        assert rec["provider"] == "offline" and rec["summary"].startswith(OFFLINE_LABEL)
        assert "paused after repeated failures" in rec["summary"]
    assert dead.connections == 4

    # The endpoint comes back on the same port; after the cool-down one trial goes
    # through (half-open), succeeds, and the circuit closes.
    dead.stop()
    fake = FakeGemini(port, api_key=API_KEY).start()
    try:
        n = 4

        def recovered() -> bool:
            nonlocal n
            n += 1
            return analyse(n)["provider"] == "gemini"

        wait_for(recovered, timeout=25, interval=0.2, what="half-open trial to succeed")
        assert svc.processor.analyzer.breaker.state == "closed"
        assert metric("sentri_analyst_breaker_state") == 0
        assert fake.count() == 1  # exactly one trial request
    finally:
        fake.stop()


def test_periodic_analysis_while_activity_lasts_never_per_frame(
    start_service, base_config, fake_gemini
):
    svc = start_service(AnalystConfig(**dict(base_config, min_interval_s=0.5)))
    svc.detections(PEOPLE)
    p0 = svc.processed()
    wait_for(lambda: len(svc.analyses()) >= 3, timeout=10, what="3 periodic analyses")
    recs = svc.analyses()
    frames = svc.processed() - p0
    assert all(a["trigger"] == "periodic" and a["provider"] == "gemini" for a in recs)
    assert frames >= 2 * len(recs), f"{len(recs)} analyses for {frames} frames: per frame?"
    seqs = [a["frame_seq"] for a in recs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # Activity ends (the detector reports an empty scene): periodic analyses stop.
    svc.detections([])
    # At most one in flight and one queued when activity ended; going on would make
    # about six more in these 3 s.
    settled = len(svc.analyses()) + 2
    p1 = svc.processed()
    wait_for(lambda: svc.processed() >= p1 + 30, timeout=20, what="3 s of frames")
    assert len(svc.analyses()) <= settled


def test_without_api_key_the_offline_provider_is_used(start_service, base_config, fake_gemini):
    cfg = dict(base_config, provider=GeminiProviderConfig(api_key_env="SENTRI_TEST_NO_SUCH_KEY"))
    svc = start_service(AnalystConfig(**cfg))
    assert svc.processor.provider.name == "offline"
    svc.detections(PEOPLE)
    svc.trigger()
    (rec,) = svc.wait_analyses(1)
    rec = AnalysisRecord.model_validate(rec)
    assert (rec.provider, rec.model, rec.error, rec.fallback_reason) == (
        "offline",
        None,
        None,
        None,
    )
    assert rec.summary.startswith(OFFLINE_LABEL + ".")
    assert rec.threat_level is None and rec.suggested_action is None
    assert fake_gemini.count() == 0


def test_daily_budget_and_rate_limits_fall_back_offline(
    start_service, base_config, fake_gemini, r, keys
):
    cfg = dict(base_config, daily_budget=2, camera_burst=3, camera_rate_per_min=0.01)
    svc = start_service(AnalystConfig(**cfg))
    svc.detections(PEOPLE)
    throttled_before = metric("sentri_analyst_throttled_total", scope="camera")
    for n in range(1, 5):
        svc.trigger()
        svc.wait_analyses(n)
    recs = svc.analyses()
    assert [a["provider"] for a in recs] == ["gemini", "gemini", "offline", "offline"]
    assert recs[2]["fallback_reason"] == "budget_exhausted"
    assert "daily request budget used up" in recs[2]["summary"]
    assert recs[3]["fallback_reason"] == "rate_limited"  # camera bucket of 3 is empty
    assert fake_gemini.count() == 2
    budget = svc.processor.analyzer.budget
    assert int(r.get(budget.key())) == 3 and budget.remaining() == 0
    assert budget.key().startswith(keys.prefix + "analyst:budget:")
    assert metric("sentri_analyst_budget_remaining") == 0
    assert metric("sentri_analyst_throttled_total", scope="camera") == throttled_before + 1


def test_undecodable_frame_is_counted_and_not_sent(start_service, base_config, fake_gemini):
    svc = start_service(AnalystConfig(**base_config), cams=(CAM, OTHER_CAM))
    wait_for(lambda: OTHER_CAM in svc.runtime.owned, timeout=10, what="second camera")
    bad_before = metric("sentri_invalid_input_total", service="analyst", reason="bad_jpeg")
    garbage = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8  # JPEG magic, then noise
    img = np.zeros((480, 640, 3), np.uint8)

    def held_bad_frame() -> bool:
        svc.publisher.publish(OTHER_CAM, img=img, jpeg=garbage)
        return svc.processed(OTHER_CAM) > 0

    wait_for(held_bad_frame, timeout=10, what="bad frame processed")
    svc.trigger(cam=OTHER_CAM)
    (rec,) = svc.wait_analyses(1)
    assert rec["camera_id"] == OTHER_CAM and rec["provider"] == "offline"
    assert rec["error"].startswith("image:") and rec["image_size"] is None
    assert fake_gemini.count() == 0
    assert metric("sentri_invalid_input_total", service="analyst", reason="bad_jpeg") == (
        bad_before + 1
    )
    svc.trigger(cam=CAM)  # the good camera is unaffected
    assert svc.wait_analyses(2)[-1]["provider"] == "gemini"
