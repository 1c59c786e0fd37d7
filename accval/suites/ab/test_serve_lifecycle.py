"""``accval serve``: what an answer says, which requests the model serves, and how the server stops.

Found by sending a running server what careless clients send: SIGTERM during a generation aborted
the process (exit 134, "terminate called without an active exception") and its client got no reply;
64 clients that sent a long request and hung up held the model for 9 minutes of generation for nobody
while a fresh request waited; every answer said ``finish_reason: "stop"``, also when ``max_tokens``
cut it; a PUT got a 501 ``server_error`` instead of a client error.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from accval.testing import skip_unless_the_engine_runs

skip_unless_the_engine_runs()

from accval import serve  # noqa: E402
from accval.cli import main  # noqa: E402

from .test_serve_robust import CLIENT_TIMEOUT, HOST, LIMITS, _port, completion, exchange, get, server  # noqa: E402, F401


def _answer(port: int, **fields) -> dict:
    status, _, body = exchange(port, completion(**fields))
    assert status == 200, body[:300]
    return json.loads(body)


def test_finish_reason_says_what_ended_the_answer_and_usage_counts_the_tokens(server):  # noqa: F811
    port = _port(server)
    cut = _answer(port, max_tokens=32)
    (choice,) = cut["choices"]
    assert choice["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 32, cut
    assert cut["usage"]["total_tokens"] == cut["usage"]["prompt_tokens"] + 32 and cut["usage"]["prompt_tokens"] > 1
    word = re.search(r"[A-Za-z]{2}", choice["text"])
    assert word, f"the built-in model's 32 tokens hold no two letters to stop at: {choice['text']!r}"
    stopped = _answer(port, max_tokens=32, stop=[word.group()])["choices"][0]
    assert stopped["finish_reason"] == "stop" and stopped["text"] == choice["text"][:word.start()], stopped
    assert _answer(port, max_tokens=None)["choices"][0]["text"], "max_tokens null: the default, as OpenAI's API"


def test_head_and_a_query_string_reach_their_routes(server):  # noqa: F811
    status, headers, body = exchange(_port(server), b"HEAD /health HTTP/1.1\r\n\r\n")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0, (status, headers, body)
    for target in ("/health?verbose=1", "//health", "/health/"):
        status, _, body = exchange(_port(server), get(target))
        assert status == 200 and json.loads(body)["status"] == "ok", (target, body[:200])
    status, headers, body = exchange(_port(server), b"HEAD /v1/completions HTTP/1.1\r\n\r\n")
    assert status == 405 and headers["allow"] == "POST" and body == b"", (status, headers, body)


def test_requests_whose_clients_left_do_not_hold_the_model(server):  # noqa: F811
    """Six clients send a 200-token request and hang up at once: none is generated in full, and a
    fresh client is answered sooner than one 200-token generation takes (it waited behind all six)."""
    own = serve.ArmServer(server.engine, server.arm, server.model_id, server.mode, 0, None, 60, LIMITS)
    runner = threading.Thread(target=own.run, daemon=True)
    runner.start()
    port = _port(own)
    try:
        t0 = time.monotonic()
        _answer(port, max_tokens=200)
        one_long = time.monotonic() - t0
        for _ in range(6):
            with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) as s:
                s.sendall(completion(max_tokens=200))
        t0 = time.monotonic()
        _answer(port, max_tokens=2)
        fresh = time.monotonic() - t0
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while own.abandoned < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert own.abandoned == 6 and own.completions == 2, (own.abandoned, own.completions)
        status, _, body = exchange(port, get("/health"))
        assert status == 200 and json.loads(body)["abandoned"] == 6, body[:300]
        assert fresh < one_long, f"a fresh request took {fresh:.2f} s, one 200-token generation {one_long:.2f} s"
    finally:
        own.stop()
        runner.join(timeout=CLIENT_TIMEOUT)


def _start_cli_server(tmp_path) -> tuple[subprocess.Popen, int]:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "accval.cli", "serve", "--arm", "b", "--model", "builtin",
                             "--port", "0", "--ready-file", str(ready), "--idle-timeout", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ready.exists() or not ready.read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"accval serve did not start: {proc.communicate()}")
        time.sleep(0.1)
    url = ready.read_text()
    assert url.startswith("http://127.0.0.1:") and url.endswith("\n") and url.count("\n") == 1, url  # one whole line
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ready")] == []  # written aside, then renamed
    return proc, int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_generation_stops_the_server_in_order(tmp_path, signum):
    """The client of the generation in flight hears 503 "server is stopping", a client still sending its
    request hears the same, and the process exits 0 within seconds, not by an abort."""
    proc, port = _start_cli_server(tmp_path)
    try:
        got = {}
        # 64 prompts decoded one after the other: the built-in model ends this prompt's answer after 83 tokens
        # (0.4 s on the EPYC), so one prompt could be answered before the signal comes
        long = completion(prompt=["Question: 1+1?"] * 64, max_tokens=4000)
        busy = threading.Thread(target=lambda: got.setdefault("busy", exchange(port, long)))
        busy.start()
        slow = socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT)
        slow.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # never finished
        time.sleep(1.5)  # the generation is under way
        t0 = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        busy.join(timeout=CLIENT_TIMEOUT)
        from .test_serve_robust import _read_response, check_json_error

        slow_answer = _read_response(slow)
        slow.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "terminate called" not in err, (proc.returncode, err[-2000:])
    assert time.monotonic() - t0 < 10, "the server took more than 10 s to stop"
    check_json_error(*got["busy"], 503, "server is stopping", "the generation in flight")
    check_json_error(*slow_answer, 503, "server is stopping", "a request still arriving")
    assert "stopped after 0 completions" in out, out


def test_an_unwritable_ready_file_is_a_usage_error_naming_it(tmp_path, capsys):
    where = tmp_path / "no-such-dir" / "ready"
    assert main(["serve", "--arm", "a", "--model", "builtin", "--port", "0", "--ready-file", str(where)]) == 2
    err = capsys.readouterr().err
    assert f"--ready-file {where}: cannot write it" in err, err
