"""``accval serve``: one arm of the in-process engine as an OpenAI-compatible completions endpoint.

Listens on 127.0.0.1 only. ``POST /v1/completions`` takes ``prompt`` (a string or a list of strings),
``max_tokens`` (default 256) and ``stop``, decodes greedily and answers in the OpenAI completions format;
``GET /health`` and ``GET /v1/models`` describe the arm and what ran at its ``o_a_proj`` site.

Robust against its clients (see :class:`Limits`):

- connections are served concurrently, each on its own daemon thread, while the model runs one request
  at a time behind a lock (generation is not thread-safe), so ``/health`` answers during a generation;
- HTTP/1.0, one request per connection: the whole request (headers and body) must arrive within
  ``Limits.read_timeout`` seconds of the connection being accepted, or the server answers 408 and drops
  the connection (a slow or silent client holds a thread for a bounded time, never the model);
- the body's size is checked from ``Content-Length`` before a byte of it is read: over the cap is 413,
  no ``Content-Length`` (or a chunked body) 411, an invalid one 400; at most ``Limits.max_connections``
  connections are open at once (503 beyond), so memory stays bounded;
- the model serves a request only while its client waits: a client that closes its connection before
  its answer (or half-closes it) is gone, and its generation is skipped or stopped at the next token,
  so abandoned requests never hold the model from the clients still waiting;
- every malformed request gets a 4xx and every failure a 5xx, always as OpenAI's JSON error
  ``{"error": {"message", "type", "param", "code"}}``: a body that is not a JSON object, nesting too
  deep to parse, a field of the wrong type or out of its range, a field this server does not
  implement (sampling, logprobs, streaming...: refused, never silently ignored), a prompt whose
  tokens plus ``max_tokens`` exceed the model's context, a method a route does not take (405), an
  HTTP version other than 1.x (400).

Bounded: it stops after ``max_requests`` completions or ``idle_timeout`` seconds without a connection,
so a test or a CI job can never leave it behind. SIGINT or SIGTERM stops it in order: requests still
arriving get 503, a generation in flight stops at its next token and its client gets 503, the
threads are joined, exit 0; a second signal ends the process at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import select
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from accval import stop
from accval.site import Arm

HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one client may ask of the server; every bound is checked before the work it bounds."""

    max_body_bytes: int = 1 << 20  # a 5-shot gsm8k prompt is ~4 KB of JSON; 1 MiB leaves room for 64 of them
    read_timeout: float = 10.0  # seconds from accept to the last byte of the request (and per socket write)
    max_connections: int = 64  # open at once; each holds a thread and at most one body
    max_tokens: int = 4096  # the cap on ``max_tokens`` (the context check comes on top)
    max_prompts: int = 64  # prompts in one request (decoded one after the other)
    max_stop: int = 16  # stop strings (OpenAI allows 4; lm-eval appends its own EOS string to a task's)
    parse_slots: int = 2  # bodies parsed at once: bounds the memory of parsed JSON to a few bodies

    def __post_init__(self):
        for name in ("max_body_bytes", "max_connections", "max_tokens", "max_prompts", "max_stop", "parse_slots"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Limits.{name}: expected an integer >= 1, got {v!r}")
        if not isinstance(self.read_timeout, (int, float)) or not 0 < self.read_timeout < math.inf:
            raise ValueError(f"Limits.read_timeout: expected a finite number of seconds > 0, got {self.read_timeout!r}")


class RequestError(Exception):
    """A request this server refuses: HTTP ``status`` and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, allow: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.allow = status, message, param, allow


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """OpenAI's error object: 4xx are ``invalid_request_error``, 5xx ``server_error``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def check_port(port) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"--port: expected 1..65535 (or 0: any free port), got {port!r}")
    return port


# ---- the request body -------------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def parse_body(raw: bytes) -> dict:
    """The JSON object of a request body, or :class:`RequestError` 400 saying why not."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "request body: JSON nested too deeply to parse") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, int literals past Python's digit limit
        raise RequestError(400, f"request body: expected a JSON object, got invalid JSON ({e})") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"request body: expected a JSON object, got a JSON {_json_type(body)}")
    return body


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def _show(v) -> str:
    """A short rendering of a client's value for an error message (never an error itself)."""
    try:
        text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else repr(v)
    except (ValueError, RecursionError):  # nested deeper than the encoder goes, or an int past the digit limit
        return f"a deeply nested or huge {_json_type(v)}"
    return text if len(text) <= 40 else text[:37] + "..."


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
        raise RequestError(400, f"{name}: expected a number in [{lo:g}, {hi:g}], got {_json_type(v)} {_show(v)}", name)
    return float(v)


def _only(body: dict, name: str, allowed, default, why: str):
    """A field this server implements in one setting only: that setting, or a 400 saying so."""
    v = body.get(name, default)
    if v is not None and not (type(v) is type(allowed) and v == allowed):
        raise RequestError(400, f"{name}: this server only supports {_show(allowed)} ({why}), got {_show(v)}", name)


@dataclasses.dataclass(frozen=True)
class Completion:
    prompts: list[str]
    max_tokens: int
    stop: list[str]


# the OpenAI completions fields; a request with any other field is refused rather than half-served
FIELDS = frozenset({"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "logprobs",
                    "echo", "stop", "presence_penalty", "frequency_penalty", "best_of", "logit_bias", "user", "seed",
                    "suffix"})


def parse_completion(body: dict, limits: Limits) -> Completion:
    """Check every field of a completions request against the OpenAI completions API and what this
    server implements (greedy decoding of text prompts); :class:`RequestError` 400 names the field."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise RequestError(400, f"unrecognized request field(s) {unknown}: expected only OpenAI completions fields "
                                f"{sorted(FIELDS)}", unknown[0])
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(400, f"model: expected a string, got {_json_type(model)}", "model")
    prompts = _prompts(body.get("prompt"), limits)
    max_tokens = body.get("max_tokens")
    max_tokens = 256 if max_tokens is None else max_tokens  # absent or null: the default, as for every field
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= limits.max_tokens:
        raise RequestError(400, f"max_tokens: expected an integer in [1, {limits.max_tokens}], got "
                                f"{_json_type(max_tokens)} {_show(max_tokens)}", "max_tokens")
    temperature = _number(body, "temperature", 0.0, 0.0, 2.0)  # absent or null: greedy, this server's only mode
    if temperature != 0:
        raise RequestError(400, f"temperature: this server decodes greedily (0), got {_show(body['temperature'])}",
                           "temperature")
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p != 1:
        raise RequestError(400, f"top_p: this server decodes greedily (1), got {_show(body['top_p'])}", "top_p")
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0:
            raise RequestError(400, f"{name}: this server applies no penalty (0), got {_show(body[name])}", name)
    _only(body, "n", 1, 1, "one greedy completion per prompt")
    _only(body, "best_of", 1, 1, "one greedy completion per prompt")
    _only(body, "stream", False, False, "whole responses only")
    _only(body, "stream_options", None, None, "whole responses only")
    _only(body, "echo", False, False, "the completion only")
    _only(body, "logprobs", None, None, "no log-probabilities")
    _only(body, "suffix", None, None, "no insertion")
    if body.get("logit_bias") not in (None, {}):
        raise RequestError(400, f"logit_bias: this server applies no bias ({{}}), got {_show(body['logit_bias'])}",
                           "logit_bias")
    seed = body.get("seed")  # accepted and unused: greedy decoding draws nothing
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(400, f"seed: expected an integer, got {_json_type(seed)} {_show(seed)}", "seed")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError(400, f"user: expected a string, got {_json_type(user)}", "user")
    return Completion(prompts, max_tokens, _stop(body.get("stop"), limits))


def _prompts(prompt, limits: Limits) -> list[str]:
    expected = "a string or a non-empty list of strings"
    if isinstance(prompt, str):
        _check_unicode(prompt, "prompt 0", "prompt")
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        got = ("an empty array" if prompt == [] else "nothing (the field is required)" if prompt is None
               else f"{_json_type(prompt)} {_show(prompt)}")
        raise RequestError(400, f"prompt: expected {expected}, got {got}", "prompt")
    if any(isinstance(p, int) and not isinstance(p, bool) or isinstance(p, list) for p in prompt):
        raise RequestError(400, "prompt: token-id prompts are not accepted (this server tokenizes the text itself; "
                                f"lm-eval: tokenized_requests=False): expected {expected}", "prompt")
    bad = next((i for i, p in enumerate(prompt) if not isinstance(p, str)), None)
    if bad is not None:
        raise RequestError(400, f"prompt: expected {expected}, got {_json_type(prompt[bad])} at index {bad}", "prompt")
    if len(prompt) > limits.max_prompts:
        raise RequestError(400, f"prompt: expected at most {limits.max_prompts} prompts, got {len(prompt)}", "prompt")
    for i, p in enumerate(prompt):
        _check_unicode(p, f"prompt {i}", "prompt")
    return prompt


def _check_unicode(text: str, what: str, param: str) -> None:
    """JSON can spell a lone UTF-16 surrogate (``"\\ud800"``); no tokenizer can encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(400, f"{what}: expected Unicode text, got a lone surrogate at character {e.start}",
                           param) from None


def _stop(stop, limits: Limits) -> list[str]:
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > limits.max_stop:
        raise RequestError(400, f"stop: expected a string or a list of at most {limits.max_stop} strings, got "
                                f"{_json_type(stop)} {_show(stop)}", "stop")
    for i, s in enumerate(stop):
        _check_unicode(s, f"stop {i}", "stop")
    return stop


# ---- HTTP ----------------------------------------------------------------------------------------------

#: path -> the methods it takes
ROUTES = {"/health": ("GET", "HEAD"), "/v1/models": ("GET", "HEAD"), "/v1/completions": ("POST",)}


def client_gone(conn: socket.socket) -> bool:
    """Whether the client of ``conn`` has closed its side (an end of stream waits to be read) or the
    connection is broken; never blocks."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


class _Handler(BaseHTTPRequestHandler):
    server: ArmServer
    protocol_version = "HTTP/1.0"  # one request per connection: the read deadline covers all of it
    server_version = "accval-serve"
    default_request_version = "HTTP/1.0"  # a request line too broken to name a version still gets a status line

    def setup(self):
        super().setup()
        # bounds each socket write too; a second longer than the read deadline, so the reaper's 408 comes first
        self.connection.settimeout(self.server.limits.read_timeout + 1.0)

    def log_message(self, fmt, *args):  # quiet: the server prints one line per completion itself
        return

    def send_error(self, code, message=None, explain=None):
        """Every error the HTTP layer finds (bad request line, header too long, unsupported method...) as
        OpenAI's JSON error, not Python's HTML page; a client's error is a 4xx."""
        self.close_connection = True
        allow = None
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method no route takes
            code, allow = 405, ", ".join(sorted({m for ms in ROUTES.values() for m in ms}))
            message = f"method {self.command!r} not allowed: use GET /health, GET /v1/models or POST /v1/completions"
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code, message = 400, f"{message or 'HTTP version not supported'}: expected HTTP/1.0 or HTTP/1.1"
        if self.server.claim(self.connection):
            self._send(code, error_body(code, message or HTTPStatus(code).phrase), allow=allow)
            self._linger()  # the rest of the request may still be unread

    def _send(self, code: int, body: dict, allow: str | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if allow:
                self.send_header("Allow", allow)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away or stopped reading: nothing left to tell it
            self.close_connection = True

    def _route(self) -> str:
        """The request's route (its path without the query, one trailing slash allowed), or a
        :class:`RequestError` 404 (no such route) or 405 (the route does not take this method)."""
        path = self.path.split("?", 1)[0]  # a request target is a path here (urlsplit reads "//v1/..." as a host)
        path = "/" + path.strip("/")
        methods = ROUTES.get(path)
        if methods is None:
            raise RequestError(404, f"no route {self.command} {self.path}; use GET /health, GET /v1/models or "
                                    "POST /v1/completions")
        if self.command not in methods:
            raise RequestError(405, f"{path} takes {' or '.join(methods)}, not {self.command}", allow=", ".join(methods))
        return path

    def _fail(self, e: RequestError) -> None:
        if self.server.claim(self.connection):
            self._send(e.status, error_body(e.status, e.message, e.param), allow=e.allow)

    def do_GET(self):
        if not self.server.claim(self.connection):
            return
        try:
            path = self._route()
            if path == "/health":
                self._send(200, {"status": "ok", **self.server.described})
            else:
                self._send(200, {"object": "list", "data": [{"id": self.server.model_id, "object": "model"}]})
        except RequestError as e:
            self._fail(e)
        except Exception as e:  # noqa: BLE001  (never a dropped connection: the client hears what went wrong)
            self._send(500, error_body(500, f"internal error: {type(e).__name__}: {e}"))

    do_HEAD = do_GET  # the same status and headers, no body (:meth:`_send`)

    def do_POST(self):
        self._body_unread = True
        try:
            self._route()
            raw = self._read_body()
            if not self.server.claim(self.connection):
                return  # the read deadline passed: the client has had its 408
            with self.server.parse_slots:
                request = parse_completion(parse_body(raw), self.server.limits)
            del raw
            answer = self.server.complete(request, gone=lambda: client_gone(self.connection))
            if answer is not None:  # None: the client left; nobody to answer
                self._send(200, answer)
        except RequestError as e:
            self._fail(e)
            if self._body_unread:
                self._linger()
        except Exception as e:  # noqa: BLE001  (never a dropped connection: the client hears what went wrong)
            self._fail(RequestError(500, f"internal error: {type(e).__name__}: {e}"))

    def _refuse_method(self):
        try:
            self._route()
        except RequestError as e:
            self._fail(e)
            self._linger()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _read_body(self) -> bytes:
        """The body, after checking its declared size against the cap (no byte is read before)."""
        if self.headers.get("Transfer-Encoding") is not None:
            raise RequestError(411, "Transfer-Encoding bodies are not accepted: send Content-Length")
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if not lengths:
            raise RequestError(411, "Content-Length required")
        if len(set(lengths)) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
            raise RequestError(400, f"Content-Length: expected one non-negative integer, got {', '.join(lengths)[:40]!r}")
        cap = self.server.limits.max_body_bytes
        n = int(lengths[0]) if len(lengths[0]) <= 18 else None  # int() refuses very long digit strings
        if n is None or n > cap:
            size = f"{n} bytes" if n is not None else f"{len(lengths[0])} digits of bytes"
            raise RequestError(413, f"request body of {size} exceeds this server's cap of {cap} bytes")
        self._body_unread = False
        try:
            raw = self.rfile.read(n)
        except OSError:
            raw = b""
        if len(raw) != n:
            raise RequestError(400, f"request body: Content-Length says {n} bytes, the connection ended after {len(raw)}")
        return raw

    def _linger(self) -> None:
        """After refusing a request whose body was not read: half-close and discard a bounded amount of
        what the client still sends, so the refusal reaches it instead of being lost to a TCP reset."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 1.0
            budget = 4 * self.server.limits.max_body_bytes
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass


class ArmServer(ThreadingHTTPServer):
    """The HTTP server: one daemon thread per connection (at most ``limits.max_connections``), a reaper
    thread that answers 408 to and drops connections still reading their request after
    ``limits.read_timeout`` seconds, and the model behind one lock."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, engine, arm: Arm, model_id: str, mode: str, port: int, max_requests: int | None,
                 idle_timeout: float, limits: Limits | None = None):
        check_port(port)
        if max_requests is not None and (not isinstance(max_requests, int) or max_requests < 1):
            raise ValueError(f"--max-requests: expected an integer >= 1, got {max_requests!r}")
        if not isinstance(idle_timeout, (int, float)) or not 0 < idle_timeout < math.inf:
            raise ValueError(f"--idle-timeout: expected a finite number of seconds > 0, got {idle_timeout!r}")
        self.limits = limits or Limits()
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as e:
            raise OSError(f"--port {port}: cannot listen on {HOST}:{port}: {e.strerror or e}") from None
        self.engine, self.arm, self.model_id, self.mode = engine, arm, model_id, mode
        self.max_requests, self.idle_timeout = max_requests, float(idle_timeout)
        self.timeout = min(0.2, self.idle_timeout)  # handle_request's poll: how soon run() sees a stop
        self.completions = 0
        self.timed_out = 0  # connections dropped by the read deadline
        self.refused = 0  # connections refused at max_connections
        self.abandoned = 0  # requests whose client left before its answer (skipped or stopped)
        self.stopping = False
        self.model_lock = threading.Lock()
        self.parse_slots = threading.BoundedSemaphore(self.limits.parse_slots)
        self._conns: dict[socket.socket, float | None] = {}  # open connection -> read deadline (None: claimed)
        self._conns_lock = threading.Lock()
        self._last_activity = time.monotonic()
        with self.model_lock:
            self.described = self._describe()

    # -- connections

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._last_activity = time.monotonic()
            full = len(self._conns) >= self.limits.max_connections
            if not full:
                self._conns[request] = time.monotonic() + self.limits.read_timeout
        if full:
            self.refused += 1
            _answer_and_close(request, 503, f"server busy: {self.limits.max_connections} connections open")
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def shutdown_request(self, request):
        self._forget(request)
        super().shutdown_request(request)

    def _forget(self, request) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)
            self._last_activity = time.monotonic()

    def claim(self, conn) -> bool:
        """The handler has read its request and may answer, unless the read deadline already passed
        (then the reaper has answered 408 and the handler must stay silent). Idempotent."""
        with self._conns_lock:
            if conn not in self._conns:
                return False
            self._conns[conn] = None
            return True

    def _reap(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            with self._conns_lock:
                late = [c for c, d in self._conns.items() if d is not None and d < now]
                for c in late:
                    del self._conns[c]
            for c in late:
                self.timed_out += 1
                _answer_and_close(c, 408, f"request not received within {self.limits.read_timeout:g} s of connecting",
                                  shutdown_only=True)
            time.sleep(0.05)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):  # a client that went away is routine; anything else is a bug to see
            print(f"accval serve: error on a connection from {client_address[0]}: {exc!r}", file=sys.stderr, flush=True)

    # -- the model

    def _describe(self) -> dict:
        stats = self.engine.site.stats.get(self.arm.name)
        return {"arm": self.arm.name, "implementation": self.arm.describe(), "model": self.model_id, "mode": self.mode,
                "site": stats.to_json() if stats else None, "completions": self.completions, "abandoned": self.abandoned}

    def complete(self, request: Completion, gone=lambda: False) -> dict | None:
        """Run ``request`` on the model (one request at a time) and return the OpenAI response body, or
        None when its client is gone (``gone()``, polled at every token) before its answer."""
        from accval.gsm8k.engine import Cancelled

        engine, positions = self.engine, self.engine.max_positions
        with self.model_lock:
            if self.stopping:
                raise RequestError(503, "server is stopping")
            if self.max_requests is not None and self.completions >= self.max_requests:
                raise RequestError(503, f"server is stopping: it has served --max-requests {self.max_requests}")
            if gone():
                self.abandoned += 1
                self.described = self._describe()
                return None
            for i, p in enumerate(request.prompts):
                n = len(engine.encode(p))
                if n < 1:
                    raise RequestError(400, f"prompt {i}: encodes to no tokens", "prompt")
                if positions and n + request.max_tokens > positions:
                    raise RequestError(400, f"prompt {i}: {n} tokens + max_tokens {request.max_tokens} = "
                                            f"{n + request.max_tokens} exceeds the model's context of {positions} "
                                            "positions", "prompt" if n >= positions else "max_tokens")
            try:
                done = [engine.complete(self.arm, p, request.stop, request.max_tokens,
                                        should_stop=lambda: self.stopping or gone()) for p in request.prompts]
                self.completions += 1
                number = self.completions
            except Cancelled:
                if self.stopping:
                    raise RequestError(503, "server is stopping: the generation was cut short") from None
                self.abandoned += 1
                return None
            except ValueError as e:  # the engine's own input checks
                raise RequestError(400, f"prompt: {e}", "prompt") from e
            except Exception as e:  # the client gets a 500 naming it; the server keeps serving
                raise RequestError(500, f"generation failed: {type(e).__name__}: {e}") from e
            finally:
                self.described = self._describe()  # a new dict: /health may be sending the old one
        return {
            "id": f"cmpl-accval-{number}", "object": "text_completion", "created": int(time.time()),
            "model": self.model_id, "system_fingerprint": self.arm.describe(),
            "choices": [{"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                        for i, (text, reason, _, _) in enumerate(done)],
            "usage": {"prompt_tokens": sum(d[2] for d in done), "completion_tokens": sum(d[3] for d in done),
                      "total_tokens": sum(d[2] + d[3] for d in done)},
        }

    # -- the loop

    def stop(self) -> None:
        """Ask :meth:`run` to return (within ``self.timeout`` seconds); callable from any thread."""
        self.stopping = True

    def run(self) -> None:
        reaper = threading.Thread(target=self._reap, name="accval-serve-reaper", daemon=True)
        reaper.start()
        try:
            while not self.stopping and (self.max_requests is None or self.completions < self.max_requests):
                self.handle_request()
                with self._conns_lock:
                    idle = not self._conns and time.monotonic() - self._last_activity > self.idle_timeout
                if idle:
                    break
            if self.stopping:  # asked to stop: requests still arriving hear so now, not at their deadline
                with self._conns_lock:
                    reading = [c for c, d in self._conns.items() if d is not None]
                    for c in reading:
                        del self._conns[c]
                for c in reading:
                    _answer_and_close(c, 503, "server is stopping", shutdown_only=True)
            deadline = time.monotonic() + self.limits.read_timeout  # let the last responses go out
            while self._conns and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            self.stopping = True  # a generation still running stops at its next token
            reaper.join(timeout=1.0)
            self.server_close()  # joins the connections' threads: none is left inside the model


def _answer_and_close(conn: socket.socket, status: int, message: str, shutdown_only: bool = False) -> None:
    """Send a small JSON error on ``conn`` without blocking for long, then close it (or, for a
    connection another thread is reading, shut it down: that thread's read ends and it closes it)."""
    data = json.dumps(error_body(status, message)).encode()
    head = (f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    try:
        conn.settimeout(0.5)
        conn.sendall(head + data)
    except OSError:
        pass
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    if not shutdown_only:
        conn.close()


def make_server(settings, arm_name: str, port: int, max_requests: int | None = None, idle_timeout: float = 600.0,
                limits: Limits | None = None) -> ArmServer:
    """Load ``settings``' model and bind the server for arm ``"a"`` or ``"b"`` (arguments are checked first)."""
    from accval.gsm8k.config import arms_for, validate
    from accval.gsm8k.engine import Engine
    from accval.model import builtin

    if not isinstance(arm_name, str) or arm_name.lower() not in ("a", "b"):
        raise ValueError(f"--arm: expected a or b, got {arm_name!r}")
    check_port(port)
    settings = validate(settings)
    loaded = builtin.load(settings.model, settings.seed, settings.device)
    engine = Engine(loaded, settings.mode, settings.device, matmul=settings.matmul)
    arm = arms_for(settings)[arm_name.upper()]
    return ArmServer(engine, arm, loaded.model_id, settings.mode, port, max_requests, idle_timeout, limits)


def serve(settings, arm_name: str, port: int, max_requests: int | None = None, idle_timeout: float = 600.0,
          ready_file: str | None = None, limits: Limits | None = None) -> int:
    """Serve arm ``"a"`` or ``"b"`` of ``settings`` (an :class:`accval.gsm8k.config.Settings`) until bounded out."""
    server = make_server(settings, arm_name, port, max_requests, idle_timeout, limits)
    def at_once(signum: int) -> None:  # a thread may be inside the model: no unwinding
        print("accval serve: stopped at once", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    url = f"http://{HOST}:{server.server_address[1]}"
    try:
        if ready_file:
            try:  # whole or not there: a reader polling for the file never reads half a line
                tmp = Path(ready_file).with_name(f".{Path(ready_file).name}.{os.getpid()}")
                tmp.write_text(url + "\n")
                os.replace(tmp, ready_file)
            except OSError as e:
                raise OSError(f"--ready-file {ready_file}: cannot write it: {e.strerror or e}") from None
        print(f"accval serve: arm {server.arm.name} ({server.arm.describe()}, {server.mode}) at {url}/v1/completions",
              flush=True)
        with stop.handling(stop.escalating(lambda signum: server.stop(), at_once)):
            server.run()
    except BaseException:
        server.server_close()
        raise
    abandoned = f"{server.abandoned} request{'' if server.abandoned == 1 else 's'}"
    print(f"accval serve: stopped after {server.completions} completions ({abandoned} abandoned by their clients)",
          flush=True)
    return 0
