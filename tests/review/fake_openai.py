"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat completions API, for judge tests.

Per model it follows a script of modes ("ok", "delay", "429", "401", "500", "garbage", "unknown_label", "hang"),
then a default mode; "ok" answers come from `answer(body)`. Every request is kept, and checked: images must be base64 PNG data
URIs in the `image_url` format and the request must ask for JSON (`response_format`).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def request_images(body: dict[str, Any]) -> list[np.ndarray]:
    """The RGB images of a chat request, in order."""
    out = []
    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    data = base64.b64decode(url.split(",", 1)[1])
                    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                    out.append(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB))
    return out


def request_text(body: dict[str, Any]) -> str:
    parts = []
    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return "\n".join(parts)


class FakeOpenAI:
    def __init__(self, answer: Answer | None = None, usage: tuple[int, int] = (1000, 50), hang_s: float = 5.0) -> None:
        self.answer: Answer = answer or (lambda body: {"label": "A", "confidence": 0.9, "reason": "A follows the edge"})
        self.usage = usage
        self.hang_s = hang_s
        self.default_mode: dict[str, str] = defaultdict(lambda: "ok")
        self.script: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[dict[str, Any]] = []  # {"model", "mode", "body", "auth", "t"}
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                owner._handle(self, raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- control ---------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def set_mode(self, model: str, mode: str) -> None:
        self.default_mode[model] = mode

    def queue(self, model: str, *modes: str) -> None:
        self.script[model].extend(modes)

    def calls(self, model: str | None = None, mode: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if (model is None or r["model"] == model)
                       and (mode is None or r["mode"] == mode))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.violations.clear()

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- serving ---------------------------------------------------------------------------------------------------
    def _check(self, body: dict[str, Any]) -> None:
        rf = body.get("response_format") or {}
        if rf.get("type") not in ("json_object", "json_schema"):
            self.violations.append(f"no JSON response_format: {rf!r}")
        urls = [p["image_url"]["url"] for m in body.get("messages", []) if isinstance(m.get("content"), list)
                for p in m["content"] if p.get("type") == "image_url"]
        if len(urls) < 3:
            self.violations.append(f"expected crop + 2 overlays, got {len(urls)} images")
        for u in urls:
            if not u.startswith("data:image/png;base64,"):
                self.violations.append(f"image is not a PNG data URI: {u[:40]}")

    def _handle(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(h, 400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
            return
        model = str(body.get("model"))
        with self._lock:
            mode = self.script[model].popleft() if self.script[model] else self.default_mode[model]
            self.requests.append({"model": model, "mode": mode, "body": body,
                                  "auth": h.headers.get("Authorization"), "t": time.monotonic()})
            self._check(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if mode == "hang":
                self._release.wait(self.hang_s)
                return self._send(h, 200, self._completion(model, json.dumps({"label": "A", "confidence": 0.5,
                                                                                "reason": "late"})))
            if mode == "429":
                return self._send(h, 429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error",
                                                     "code": "rate_limit_exceeded"}}, {"Retry-After": "0"})
            if mode == "401":  # like OpenAI, echo (part of) the key: the client must scrub it
                auth = h.headers.get("Authorization") or ""
                return self._send(h, 401, {"error": {"message": f"Incorrect API key provided: {auth[7:]}",
                                                     "type": "invalid_request_error", "code": "invalid_api_key"}})
            if mode == "500":
                return self._send(h, 500, {"error": {"message": "upstream exploded", "type": "server_error"}})
            if mode == "garbage":
                return self._send(h, 200, self._completion(model, "I think the first one, probably?"))
            if mode == "unknown_label":
                return self._send(h, 200, self._completion(model, json.dumps({"label": "C", "confidence": 0.7,
                                                                                "reason": "?"})))
            if mode == "delay":
                time.sleep(0.2)
            ans = self.answer(body)
            return self._send(h, 200, self._completion(model, json.dumps(ans)))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _completion(self, model: str, content: str) -> dict[str, Any]:
        p, c = self.usage
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
