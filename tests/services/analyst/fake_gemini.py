"""A local fake of the Gemini ``generateContent`` endpoint, for the real google-genai SDK.

Real HTTP on 127.0.0.1 (stdlib ``http.server`` in a thread).  Every request is
checked the way the real API would need it (model path, API key header, an inline
``image/jpeg`` part that decodes, a text part, JSON response schema) and recorded;
answers follow a script of :class:`Reply` objects, then a default success.

:class:`DroppingServer` is a "dead" endpoint: it accepts TCP connections and closes
them at once, counting them, so a test can prove no request reached the network.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

PATH = re.compile(r"^/(v1beta|v1)/models/([A-Za-z0-9._\-]+):generateContent$")

DEFAULT_ANSWER = {
    "summary": "Two people stand next to a blue city bus at a stop; no one is running.",
    "notable_objects": ["blue bus", "person near the door", "person on the pavement"],
    "threat_level": "none",
    "suggested_action": "none",
}


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    text: str | None = None  # model answer text (200 only); None = DEFAULT_ANSWER
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None  # raw body override (errors)
    delay_s: float = 0.0  # the server "thinks" this long before answering

    @classmethod
    def ok(cls, answer: dict[str, Any] | None = None) -> Reply:
        return cls(text=json.dumps(answer or DEFAULT_ANSWER))

    @classmethod
    def malformed(cls, text: str) -> Reply:
        return cls(text=text)

    @classmethod
    def error(
        cls, status: int, *, retry_after: str | None = None, retry_delay: str | None = None
    ) -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        err: dict[str, Any] = {
            "code": status,
            "message": "Resource has been exhausted (e.g. check quota)."
            if status == 429
            else "The service is currently unavailable.",
            "status": "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE",
        }
        if retry_delay is not None:
            err["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            ]
        return cls(status=status, headers=headers, body={"error": err})


@dataclass
class Received:
    """One request as the fake saw it."""

    at: float  # time.monotonic() on arrival
    path: str
    model: str | None
    api_key: str | None
    body: dict[str, Any] | None
    problems: list[str]
    prompt: str = ""
    image_size: tuple[int, int] | None = None  # (w, h) of the decoded inline JPEG
    reply_status: int = 0


class FakeGemini:
    def __init__(self, port: int, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.script: deque[Reply] = deque()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean; requests are recorded instead

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # ----------------------------------------------------------------- control
    def start(self) -> FakeGemini:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake gemini got {len(self.received)} requests, want {n}")
                self._cond.wait(left)
            return list(self.received)

    # ---------------------------------------------------------------- handling
    def _check(self, handler: BaseHTTPRequestHandler, raw: bytes) -> Received:
        problems: list[str] = []
        path = handler.path.split("?", 1)[0]
        m = PATH.match(path)
        if not m:
            problems.append(f"unexpected path {path}")
        key = handler.headers.get("x-goog-api-key")
        if key != self.api_key:
            problems.append("missing or wrong x-goog-api-key")
        if "json" not in (handler.headers.get("content-type") or ""):
            problems.append("content-type is not JSON")
        rec = Received(
            at=time.monotonic(),
            path=path,
            model=m.group(2) if m else None,
            api_key=key,
            body=None,
            problems=problems,
        )
        try:
            body = json.loads(raw)
        except ValueError:
            problems.append("body is not JSON")
            return rec
        rec.body = body
        contents = body.get("contents") or []
        parts = [p for c in contents for p in (c.get("parts") or [])]
        texts = [p["text"] for p in parts if isinstance(p.get("text"), str)]
        images = [p["inlineData"] for p in parts if isinstance(p.get("inlineData"), dict)]
        if not texts:
            problems.append("no text part")
        rec.prompt = "\n".join(texts)
        if len(images) != 1:
            problems.append(f"{len(images)} inline images")
        else:
            img = images[0]
            # Like the real API (proto JSON): camelCase or snake_case field names, and
            # standard or URL-safe base64.
            mime = img.get("mimeType", img.get("mime_type"))
            if mime != "image/jpeg":
                problems.append(f"image mime type {mime}")
            try:
                b64 = str(img.get("data", "")).replace("-", "+").replace("_", "/")
                data = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
                arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            except ValueError:
                arr = None
            if arr is None:
                problems.append("inline image does not decode as JPEG")
            else:
                rec.image_size = (arr.shape[1], arr.shape[0])
        gen = body.get("generationConfig") or {}
        if gen.get("responseMimeType") != "application/json":
            problems.append("responseMimeType is not application/json")
        schema = gen.get("responseSchema") or gen.get("responseJsonSchema")
        if not isinstance(schema, dict) or "threat_level" not in json.dumps(schema):
            problems.append("no response schema with threat_level")
        if not body.get("systemInstruction"):
            problems.append("no system instruction")
        return rec

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(min(length, 32 * 1024 * 1024))
        rec = self._check(handler, raw)
        with self._lock:
            reply = self.script.popleft() if self.script else Reply.ok()
        if rec.problems:
            reply = Reply(status=400, body={"error": {"code": 400, "message": "; ".join(rec.problems), "status": "INVALID_ARGUMENT"}})  # fmt: skip
        if reply.status == 200:
            text = reply.text if reply.text is not None else json.dumps(DEFAULT_ANSWER)
            payload = {
                "candidates": [
                    {
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 312,
                    "candidatesTokenCount": 48,
                    "totalTokenCount": 360,
                },
                "modelVersion": rec.model or "unknown",
            }
        else:
            payload = reply.body or {"error": {"code": reply.status, "message": "error"}}
        data = json.dumps(payload).encode()
        rec.reply_status = reply.status
        with self._cond:
            self.received.append(rec)
            self._cond.notify_all()
        if reply.delay_s:
            time.sleep(reply.delay_s)  # simulated model latency (server side)
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)


class DroppingServer:
    """Accepts TCP connections on 127.0.0.1 and closes them at once (a dead backend)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{port}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> DroppingServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
