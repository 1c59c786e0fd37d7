"""``accval serve``: one arm of the in-process engine as an OpenAI-compatible completions endpoint.

Listens on 127.0.0.1 only. ``POST /v1/completions`` takes ``prompt`` (a string or a list),
``max_tokens`` (default 256), ``stop`` and ``temperature`` (greedy only: anything but 0 is a 400)
and answers in the OpenAI completions format; ``GET /health`` and ``GET /v1/models`` describe the arm
and what ran at its ``o_a_proj`` site. Bounded: it stops after ``max_requests`` completions or
``idle_timeout`` seconds without a request (and on SIGINT/SIGTERM), so a test or a CI job can never
leave it behind. Requests are served one at a time, each prompt as its own batch of one.
"""

from __future__ import annotations

import json
import signal
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from accval.model.site import Arm


class _Handler(BaseHTTPRequestHandler):
    server: "ArmServer"

    def log_message(self, fmt, *args):  # quiet: the server prints one line per completion itself
        return

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _describe(self) -> dict:
        s = self.server
        stats = s.engine.site.stats.get(s.arm.name)
        return {"arm": s.arm.name, "implementation": s.arm.describe(), "model": s.model_id, "mode": s.mode,
                "site": stats.to_json() if stats else None}

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"status": "ok", **self._describe()})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model_id, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        if self.path.rstrip("/") != "/v1/completions":
            self._send(404, {"error": {"message": f"no route {self.path}; use /v1/completions"}})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            prompts = body.get("prompt")
            prompts = [prompts] if isinstance(prompts, str) else prompts
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                raise ValueError(f"prompt: expected a string or a list of strings, got {type(prompts).__name__}")
            if float(body.get("temperature", 0) or 0) != 0:
                raise ValueError(f"temperature: this server decodes greedily (0), got {body.get('temperature')}")
            max_tokens = int(body.get("max_tokens", 256))
            if max_tokens < 1:
                raise ValueError(f"max_tokens: expected >= 1, got {max_tokens}")
            stop = body.get("stop") or []
            stop = [stop] if isinstance(stop, str) else list(stop)
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
            return
        s = self.server
        texts = [s.engine.generate(s.arm, [p], stop, max_tokens)[0] for p in prompts]
        s.completions += 1
        self._send(200, {
            "id": f"cmpl-accval-{s.completions}", "object": "text_completion", "created": int(time.time()),
            "model": s.model_id, "system_fingerprint": s.arm.describe(),
            "choices": [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)],
        })


class ArmServer(HTTPServer):
    def __init__(self, engine, arm: Arm, model_id: str, mode: str, port: int, max_requests: int | None,
                 idle_timeout: float):
        super().__init__(("127.0.0.1", port), _Handler)
        self.engine, self.arm, self.model_id, self.mode = engine, arm, model_id, mode
        self.max_requests, self.timeout = max_requests, idle_timeout
        self.completions = 0
        self.stopping = False

    def handle_timeout(self):
        self.stopping = True

    def run(self) -> None:
        while not self.stopping and (self.max_requests is None or self.completions < self.max_requests):
            self.handle_request()
        self.server_close()


def serve(settings, arm_name: str, port: int, max_requests: int | None = None, idle_timeout: float = 600.0,
          ready_file: str | None = None) -> int:
    """Serve arm ``"a"`` or ``"b"`` of ``settings`` (an :class:`accval.gsm8k.ab.Settings`) until bounded out."""
    from accval.gsm8k.ab import arms_for, validate
    from accval.gsm8k.engine import Engine
    from accval.model import builtin

    if arm_name.lower() not in ("a", "b"):
        raise ValueError(f"--arm: expected a or b, got {arm_name!r}")
    settings = validate(settings)
    loaded = builtin.load(settings.model, settings.seed, settings.device)
    engine = Engine(loaded, settings.mode, settings.device, matmul=settings.matmul)
    arm = arms_for(settings)[arm_name.upper()]
    server = ArmServer(engine, arm, loaded.model_id, settings.mode, port, max_requests, idle_timeout)
    def _stop(*_):
        raise KeyboardInterrupt  # leaves handle_request at once, whatever it is waiting on

    signal.signal(signal.SIGTERM, _stop)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"accval serve: arm {arm.name} ({arm.describe()}, {settings.mode}) at {url}/v1/completions", flush=True)
    if ready_file:
        Path(ready_file).write_text(url)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    print(f"accval serve: stopped after {server.completions} completions", flush=True)
    return 0
