"""``accval serve`` against hostile clients, on 127.0.0.1 only.

Every malformed request gets its 4xx as OpenAI's JSON error; an oversized body is refused with 413
from its ``Content-Length`` before it is read (memory stays flat); a slow or silent client is dropped
with 408 after the read deadline; and under all of that at once, next to normal completions,
``/health`` answers within :data:`HEALTH_BOUND`. Every socket has a timeout and every loop a bound, so
the module stops by itself (a few seconds after the built-in model is loaded).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from accval.testing import skip_unless_the_engine_runs

skip_unless_the_engine_runs()

from accval import serve  # noqa: E402
from accval.cli import main  # noqa: E402
from accval.gsm8k.config import Settings  # noqa: E402

HOST = "127.0.0.1"
READ_TIMEOUT = 1.5  # the servers' read deadline here: short, so that dropping a slow client is seen quickly
LIMITS = serve.Limits(read_timeout=READ_TIMEOUT)
HEALTH_BOUND = 2.0  # seconds /health may take under load (it takes milliseconds when the server is healthy)
DROP_BOUND = READ_TIMEOUT + 1.5  # a slow client hears its 408 by then (the reaper looks every 50 ms; CI is shared)
CLIENT_TIMEOUT = 10.0  # no client socket here ever waits longer than this for anything
OVERSIZED = 64 << 20  # bytes each oversized client really sends (64 times the server's 1 MiB cap)
RSS_GROWTH_BOUND = 32 << 20  # peak RSS growth allowed while 4 oversized bodies arrive: thread stacks, socket
# buffers and allocator noise measure under 8 MiB; a server that read one of the bodies would grow by >= 64 MiB


# ---- raw HTTP over one socket ---------------------------------------------------------------------------

def _read_response(sock: socket.socket, timeout: float = CLIENT_TIMEOUT) -> tuple[int, dict, bytes]:
    """(status, headers, body) of the one response on ``sock`` (read until the server closes)."""
    sock.settimeout(timeout)
    deadline, data = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise AssertionError(f"no HTTP response, got {data[:200]!r}")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def exchange(port: int, request: bytes, shut_write: bool = False) -> tuple[int, dict, bytes]:
    with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) as s:
        try:
            s.sendall(request)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may refuse before reading everything; its answer is still on the way
            pass
        return _read_response(s)


def post(body: bytes, path: str = "/v1/completions", headers: dict | None = None) -> bytes:
    hdrs = {"Host": HOST, "Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None) + "\r\n"
    return head.encode() + body


def completion(**fields) -> bytes:
    return post(json.dumps({"prompt": "Question: 1+1?", "max_tokens": 2, **fields}).encode())


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def check_json_error(status: int, headers: dict, body: bytes, expected: int, needle: str, what: str) -> None:
    assert status == expected, f"{what}: expected HTTP {expected}, got {status}: {body[:300]!r}"
    assert headers.get("content-type") == "application/json", f"{what}: {headers=}"
    err = json.loads(body)["error"]
    assert isinstance(err["message"], str) and err["type"] == ("invalid_request_error" if status < 500 else
                                                               "server_error"), f"{what}: {err=}"
    assert needle.lower() in err["message"].lower(), f"{what}: expected {needle!r} in the message, got {err['message']!r}"


# ---- the malformed requests ------------------------------------------------------------------------------

def _over_context() -> bytes:
    """A prompt the built-in model's tokenizer turns into more than its 16384 positions (~0.6 tokens a char)."""
    return json.dumps({"prompt": "a b c d e f " * 5000, "max_tokens": 2}).encode()


MALFORMED = [  # (id, raw request, expected status, a phrase the error message must contain)
    # the seven the issue found without any response
    ("body-json-array", post(b"[]"), 400, "got a JSON array"),
    ("body-json-string", post(b'"hello"'), 400, "got a JSON string"),
    ("body-json-null", post(b"null"), 400, "got a JSON null"),
    ("body-nested-100k-deep", post(b"[" * 100_000 + b"]" * 100_000), 400, "nested too deeply"),
    ("max-tokens-1e400", post(b'{"prompt": "a", "max_tokens": 1e400}'), 400, "max_tokens: expected an integer"),
    ("max-tokens-1e9", completion(max_tokens=10**9), 400, "max_tokens: expected an integer in [1, 4096]"),
    ("prompt-over-context", post(_over_context()), 400, "exceeds the model's context of 16384"),
    # bodies that are not a JSON object
    ("body-json-number", post(b"5"), 400, "got a JSON number"),
    ("body-not-json", post(b'{"prompt": '), 400, "invalid JSON"),
    ("body-empty", post(b""), 400, "invalid JSON"),
    ("body-not-utf8", post(b'{"prompt": "\xff\xfe"}'), 400, "invalid JSON"),
    ("body-nan-literal", post(b'{"prompt": "a", "temperature": NaN}'), 400, "NaN"),
    ("body-5000-digit-int", post(b'{"prompt": "a", "max_tokens": ' + b"9" * 5000 + b"}"), 400, "invalid JSON"),
    # every field, wrong type or out of range
    ("prompt-missing", post(b'{"max_tokens": 2}'), 400, "prompt: expected"),
    ("prompt-number", completion(prompt=5), 400, "prompt: expected"),
    ("prompt-empty-list", completion(prompt=[]), 400, "empty array"),
    ("prompt-token-ids", completion(prompt=[1, 2, 3]), 400, "token-id prompts"),
    ("prompt-token-id-lists", completion(prompt=[[1, 2], [3]]), 400, "token-id prompts"),
    ("prompt-list-with-null", completion(prompt=["a", None]), 400, "null at index 1"),
    ("prompt-lone-surrogate", post(b'{"prompt": "a\\ud800"}'), 400, "lone surrogate"),
    ("prompt-too-many", completion(prompt=["a"] * 65), 400, "at most 64 prompts"),
    ("max-tokens-nested-900-deep", post(b'{"prompt": "a", "max_tokens": ' + b"[" * 900 + b"]" * 900 + b"}"), 400,
     "max_tokens: expected an integer"),
    ("max-tokens-0", completion(max_tokens=0), 400, "max_tokens"),
    ("max-tokens-negative", completion(max_tokens=-1), 400, "max_tokens"),
    ("max-tokens-string", completion(max_tokens="5"), 400, "max_tokens"),
    ("max-tokens-bool", completion(max_tokens=True), 400, "max_tokens"),
    ("max-tokens-float", completion(max_tokens=2.5), 400, "max_tokens"),
    ("max-tokens-plus-prompt-over-context", completion(max_tokens=4096, prompt="a b c d e f " * 2100), 400,
     "exceeds the model's context"),
    ("temperature-sampling", completion(temperature=0.7), 400, "greedily"),
    ("temperature-out-of-range", completion(temperature=-1), 400, "temperature: expected a number in [0, 2]"),
    ("temperature-string", completion(temperature="0"), 400, "temperature: expected a number"),
    ("temperature-bool", completion(temperature=False), 400, "temperature: expected a number"),
    ("top-p-sampling", completion(top_p=0.5), 400, "top_p"),
    ("top-p-out-of-range", completion(top_p=2), 400, "top_p: expected a number in [0, 1]"),
    ("presence-penalty", completion(presence_penalty=1), 400, "presence_penalty"),
    ("frequency-penalty-out-of-range", completion(frequency_penalty=3), 400, "frequency_penalty: expected"),
    ("n-2", completion(n=2), 400, "n: this server only supports 1"),
    ("n-bool", completion(n=True), 400, "n: this server only supports 1"),
    ("best-of-3", completion(best_of=3), 400, "best_of"),
    ("stream", completion(stream=True), 400, "stream"),
    ("echo", completion(echo=True), 400, "echo"),
    ("logprobs", completion(logprobs=1), 400, "logprobs"),
    ("suffix", completion(suffix="x"), 400, "suffix"),
    ("logit-bias", completion(logit_bias={"5": 1}), 400, "logit_bias"),
    ("stop-number", completion(stop=5), 400, "stop: expected"),
    ("stop-list-of-numbers", completion(stop=[1]), 400, "stop: expected"),
    ("stop-lone-surrogate", completion(stop=["\udfff"]), 400, "stop 0: expected Unicode text"),
    ("stop-too-many", completion(stop=["x"] * 17), 400, "at most 16 strings"),
    ("seed-string", completion(seed="x"), 400, "seed: expected an integer"),
    ("model-number", completion(model=5), 400, "model: expected a string"),
    ("user-number", completion(user=5), 400, "user: expected a string"),
    ("unknown-field", completion(top_k=40), 400, "unrecognized request field(s) ['top_k']"),
    # HTTP framing
    ("content-length-missing", post(b"{}", headers={"Content-Length": None}), 411, "Content-Length required"),
    ("content-length-not-a-number", post(b"{}", headers={"Content-Length": "abc"}), 400, "Content-Length"),
    ("content-length-negative", post(b"{}", headers={"Content-Length": "-2"}), 400, "Content-Length"),
    ("content-length-twice", post(b"{}", headers={"Content-Length": "2\r\nContent-Length: 3"}), 400, "Content-Length"),
    ("transfer-encoding-chunked", post(b"2\r\n{}\r\n0\r\n\r\n", headers={"Content-Length": None,
                                                                          "Transfer-Encoding": "chunked"}), 411,
     "Transfer-Encoding"),
    ("content-length-1e9", post(b"", headers={"Content-Length": str(10**9)}), 413, "exceeds this server's cap"),
    ("content-length-40-digits", post(b"", headers={"Content-Length": "9" * 40}), 413, "exceeds this server's cap"),
    ("post-unknown-path", post(b"{}", path="/v1/chat/completions"), 404, "no route POST"),
    ("get-unknown-path", get("/nope"), 404, "no route GET"),
    ("method-put", b"PUT /v1/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "/v1/completions takes POST, not PUT"),
    ("method-delete-health", b"DELETE /health HTTP/1.1\r\n\r\n", 405, "/health takes GET or HEAD, not DELETE"),
    ("method-options", b"OPTIONS /v1/completions HTTP/1.1\r\n\r\n", 405, "takes POST, not OPTIONS"),
    ("method-unknown", b"BREW /health HTTP/1.1\r\n\r\n", 405, "method 'BREW' not allowed"),
    ("method-lowercase", b"get /health HTTP/1.1\r\n\r\n", 405, "method 'get' not allowed"),
    ("get-completions", get("/v1/completions"), 405, "/v1/completions takes POST, not GET"),
    ("post-health", post(b"{}", path="/health"), 405, "/health takes GET or HEAD, not POST"),
    ("http-2-request-line", b"GET /health HTTP/2.0\r\n\r\n", 400, "expected HTTP/1.0 or HTTP/1.1"),
    ("request-line-garbage", b"HELLO\r\n\r\n", 400, "Bad request"),
    ("request-line-70kb", get("/" + "a" * 70_000), 414, "Too Long"),
    ("header-line-70kb", b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "Line too long"),
    ("headers-200", b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431,
     "Too many headers"),
]


def _truncated_body_case(port: int) -> tuple[int, dict, bytes]:
    """Content-Length 100, ten bytes, then the client closes its side."""
    return exchange(port, post(b'{"prompt":', headers={"Content-Length": "100"}), shut_write=True)


# ---- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    srv = serve.make_server(Settings(model="builtin", device="cpu"), "b", 0, idle_timeout=120, limits=LIMITS)
    runner = threading.Thread(target=srv.run, name="accval-serve-under-test", daemon=True)
    runner.start()
    yield srv
    srv.stop()
    runner.join(timeout=CLIENT_TIMEOUT)
    assert not runner.is_alive(), "the server did not stop within 10 s of stop()"


def _port(srv) -> int:
    return srv.server_address[1]


# ---- tests -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_bytes", "expected", "needle"),
                         [pytest.param(r, s, n, id=i) for i, r, s, n in MALFORMED])
def test_a_malformed_request_gets_its_4xx_as_openai_json(server, request_bytes, expected, needle):
    """Each kind of malformed request gets its own status and an OpenAI error object naming the problem,
    and the server serves the next request as before."""
    status, headers, body = exchange(_port(server), request_bytes)
    check_json_error(status, headers, body, expected, needle, f"request {request_bytes[:60]!r}")


def test_a_truncated_body_is_a_400(server):
    status, headers, body = _truncated_body_case(_port(server))
    check_json_error(status, headers, body, 400, "the connection ended after 10", "truncated body")


def test_a_completion_still_answers_in_the_openai_format(server):
    """Two prompts in one request: two greedy choices, in order."""
    status, _, body = exchange(_port(server), completion(prompt=["Question: 1+1?", "Question: 2+2?"]))
    assert status == 200, body[:300]
    out = json.loads(body)
    assert out["object"] == "text_completion" and [c["index"] for c in out["choices"]] == [0, 1], out
    assert all(isinstance(c["text"], str) for c in out["choices"]), out


def test_a_failure_inside_generation_is_a_500_and_the_server_keeps_serving(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure inside the model")

    monkeypatch.setattr(server.engine, "complete", broken)
    check_json_error(*exchange(_port(server), completion()), 500, "RuntimeError: simulated failure", "broken model")
    monkeypatch.undo()
    status, _, body = exchange(_port(server), completion())
    assert status == 200, body[:200]


def _slow_until_dropped(port: int, results: list, byte_delay: float | None) -> None:
    """Send a request's headers a byte every ``byte_delay`` seconds, never the final CRLF (None: send
    nothing), until the server answers and closes; record (seconds until then, status or None, bytes)."""
    t0 = time.monotonic()
    request = get("/health")[:-2]
    with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) as s:
        s.settimeout(byte_delay or CLIENT_TIMEOUT)
        data, sent = b"", 0
        while time.monotonic() - t0 < CLIENT_TIMEOUT:
            if byte_delay is not None and sent < len(request):
                try:
                    s.sendall(request[sent:sent + 1])
                    sent += 1
                except OSError:
                    pass
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    status = int(data.split()[1]) if data.startswith(b"HTTP/") else None
    results.append((time.monotonic() - t0, status, data))


def test_slow_and_silent_clients_are_dropped_with_408(server):
    """A client that sends its headers a byte every 0.1 s, or nothing at all, gets 408 once the read
    deadline passes, and never longer than :data:`DROP_BOUND` after connecting."""
    results: list = []
    threads = [threading.Thread(target=_slow_until_dropped, args=(_port(server), results, d)) for d in (0.1, None)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=CLIENT_TIMEOUT + 2)
    assert len(results) == 2, results
    for took, status, data in results:
        assert status == 408 and READ_TIMEOUT - 0.1 <= took <= DROP_BOUND, f"{took=:.2f} {status=} {data[:200]!r}"
        assert b"not received within 1.5 s" in data, data


def test_oversized_bodies_are_refused_before_they_are_read(server):
    """Four clients each send a 64 MiB body: each gets 413, and the process's peak RSS grows by less than
    :data:`RSS_GROWTH_BOUND` (the server is in this process; the clients send from one reused buffer)."""
    chunk = b"x" * (1 << 20)

    def send_oversized(results: list) -> None:
        with socket.create_connection((HOST, _port(server)), timeout=CLIENT_TIMEOUT) as s:
            try:
                s.sendall(post(b"", headers={"Content-Length": str(OVERSIZED)}))
                for _ in range(OVERSIZED // len(chunk)):
                    s.sendall(chunk)
            except OSError:
                pass  # refused before the end: expected
            results.append(_read_response(s))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _vm("VmHWM")
    results: list = []
    threads = [threading.Thread(target=send_oversized, args=(results,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=CLIENT_TIMEOUT + 2)
    growth = _vm("VmHWM") - before
    assert growth < RSS_GROWTH_BOUND, f"peak RSS grew by {growth / 2**20:.1f} MiB receiving 4 x {OVERSIZED >> 20} MiB"
    assert len(results) == 4, results
    for status, headers, body in results:
        check_json_error(status, headers, body, 413, f"request body of {OVERSIZED} bytes exceeds", "oversized")


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def test_health_stays_answerable_under_a_hostile_load(server):
    """All at once for about 3 s: 3 clients asking for completions, 2 slow and 2 silent clients, 2 oversized
    bodies, and every malformed request twice over; meanwhile /health is polled every 50 ms and every
    poll must answer 200 within :data:`HEALTH_BOUND` s. Every other client gets what it gets alone."""
    port, stop = _port(server), threading.Event()
    latencies: list[float] = []
    failures: list[str] = []

    def poll_health():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                status, _, body = exchange(port, get("/health"))
                if status != 200 or json.loads(body)["status"] != "ok":
                    failures.append(f"/health answered {status}: {body[:200]!r}")
            except (OSError, AssertionError, ValueError) as e:
                failures.append(f"/health failed after {time.monotonic() - t0:.2f} s: {e!r}")
            latencies.append(time.monotonic() - t0)
            stop.wait(0.05)

    def normal_client():
        for _ in range(2):
            status, _, body = exchange(port, completion())
            if status != 200 or len(json.loads(body)["choices"]) != 1:
                failures.append(f"completion answered {status}: {body[:200]!r}")

    def malformed_client():
        for case_id, request, expected, needle in MALFORMED:
            try:
                check_json_error(*exchange(port, request), expected, needle, case_id)
            except (AssertionError, OSError, ValueError) as e:
                failures.append(f"{case_id}: {e!r}"[:300])

    def oversized_client():
        try:
            check_json_error(*exchange(port, post(b"x" * (8 << 20))), 413, "exceeds this server's cap", "oversized")
        except (AssertionError, OSError, ValueError) as e:
            failures.append(f"oversized: {e!r}"[:300])

    slow: list = []
    workers = ([threading.Thread(target=normal_client) for _ in range(3)]
               + [threading.Thread(target=_slow_until_dropped, args=(port, slow, d)) for d in (0.1, 0.1, None, None)]
               + [threading.Thread(target=oversized_client) for _ in range(2)]
               + [threading.Thread(target=malformed_client) for _ in range(2)])
    poller = threading.Thread(target=poll_health)
    poller.start()
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=max(0.1, 25 - (time.monotonic() - t0)))
    stop.set()
    poller.join(timeout=CLIENT_TIMEOUT + 2)
    assert not any(w.is_alive() for w in workers) and not poller.is_alive(), "a client did not finish within 25 s"
    assert not failures, failures[:10]
    assert [s for _, s, _ in slow] == [408] * 4, slow
    assert len(latencies) >= 10 and max(latencies) < HEALTH_BOUND, \
        f"/health: {len(latencies)} polls, max {max(latencies, default=0):.3f} s (bound {HEALTH_BOUND} s)"
    print(f"/health under load: {len(latencies)} polls, median {sorted(latencies)[len(latencies) // 2] * 1e3:.1f} ms, "
          f"max {max(latencies) * 1e3:.1f} ms")


def test_connections_past_the_cap_get_503_then_the_server_recovers(server):
    """With room for 3 connections and 3 silent clients holding them, a 4th connection gets 503 at once;
    after the read deadline drops the silent ones, /health answers again."""
    small = serve.ArmServer(server.engine, server.arm, server.model_id, server.mode, 0, None, 30,
                            serve.Limits(read_timeout=0.5, max_connections=3))
    runner = threading.Thread(target=small.run, daemon=True)
    runner.start()
    port = _port(small)
    held = [socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) for _ in range(3)]
    try:
        time.sleep(0.3)  # let the server accept all three
        t0 = time.monotonic()
        check_json_error(*exchange(port, get("/health")), 503, "3 connections open", "4th connection")
        assert time.monotonic() - t0 < HEALTH_BOUND
        time.sleep(0.5 + 1.0)  # the read deadline, and time for the reaper on a shared CPU
        status, _, body = exchange(port, get("/health"))
        assert status == 200, body[:200]
    finally:
        for s in held:
            s.close()
        small.stop()
        runner.join(timeout=CLIENT_TIMEOUT)
    assert not runner.is_alive()


def test_the_server_stops_by_itself(server):
    """``max_requests`` completions, or ``idle_timeout`` seconds without a connection, end :meth:`run`
    (a completion queued behind the last allowed one gets 503)."""
    done = serve.ArmServer(server.engine, server.arm, server.model_id, server.mode, 0, 1, 30, LIMITS)
    runner = threading.Thread(target=done.run, daemon=True)
    runner.start()
    status, _, body = exchange(_port(done), completion())
    assert status == 200, body[:200]
    runner.join(timeout=5)
    assert not runner.is_alive(), "--max-requests 1: still serving 5 s after the completion"
    idle = serve.ArmServer(server.engine, server.arm, server.model_id, server.mode, 0, None, 0.5, LIMITS)
    t0 = time.monotonic()
    idle.run()
    assert time.monotonic() - t0 < 3, "--idle-timeout 0.5: still serving after 3 s"


@pytest.mark.parametrize("port", [-1, 65536, 70000, True, 8000.0, "80"])
def test_a_bad_port_is_a_value_error_naming_it(port):
    with pytest.raises(ValueError, match=r"--port: expected 1\.\.65535 \(or 0: any free port\), got"):
        serve.check_port(port)


@pytest.mark.parametrize("port", ["-1", "70000"])
def test_serve_with_a_bad_port_exits_2_before_loading_the_model(port, capsys):
    t0 = time.monotonic()
    assert main(["serve", "--arm", "a", "--model", "builtin", "--port", port]) == 2
    err = capsys.readouterr().err
    assert "error: argument --port: expected a TCP port 0..65535" in err and port in err and err.count("\n") == 1, err
    assert time.monotonic() - t0 < 2, "checked only after loading the model"


@pytest.mark.parametrize(("kwargs", "needle"), [({"max_requests": 0}, "--max-requests"),
                                                 ({"idle_timeout": 0}, "--idle-timeout"),
                                                 ({"idle_timeout": float("nan")}, "--idle-timeout")])
def test_bad_bounds_are_value_errors(server, kwargs, needle):
    args = {"max_requests": None, "idle_timeout": 30.0, **kwargs}
    with pytest.raises(ValueError, match=needle):
        serve.ArmServer(server.engine, server.arm, server.model_id, server.mode, 0, args["max_requests"],
                        args["idle_timeout"])
