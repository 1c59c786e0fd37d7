"""Endpoint arms: an A/B over two ``accval serve`` processes equals the in-process A/B."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from accval.testing import skip_unless_the_engine_runs

pytest.importorskip("lm_eval")
pytest.importorskip("tenacity")
skip_unless_the_engine_runs()

from accval.cli import main  # noqa: E402

from .test_task import DATA, needs_data  # noqa: E402

TINY = ["--model", "builtin", "--limit", "2", "--max-gen-toks", "4", "--quiet"]


def _start(arm: str, tmp_path):
    ready = tmp_path / f"ready-{arm}"
    proc = subprocess.Popen([sys.executable, "-m", "accval.cli", "serve", "--arm", arm, "--model", "builtin", "--port", "0",
                             "--ready-file", str(ready), "--idle-timeout", "120", "--max-requests", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"accval serve --arm {arm} did not start: {proc.stdout.read()}")
        time.sleep(0.2)
    return proc, ready.read_text().strip()


def _generations(run_dir, arm):
    rows = [json.loads(line) for line in (run_dir / f"samples-{arm}.jsonl").read_text().splitlines()]
    return {(r["doc_id"], r["filter"]): (r["resps"][0][0], r["exact_match"]) for r in rows}


@needs_data
def test_endpoint_ab_equals_in_process_ab(tmp_path):
    servers = [_start(arm, tmp_path) for arm in ("a", "b")]
    try:
        health = json.loads(urllib.request.urlopen(servers[1][1] + "/health", timeout=10).read())
        assert health["implementation"] == "fp8-chain[torch]"
        rc = main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(tmp_path / "ep"), *TINY,
                   "--endpoint-a", servers[0][1], "--endpoint-b", servers[1][1]])
        assert rc == 0
        site = json.loads(urllib.request.urlopen(servers[1][1] + "/health", timeout=10).read())["site"]
        assert set(site["ran"]) == {"producer:torch-reference", "consumer:emulated", "o_a_proj:fp8-chain"}, site
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=30)
    # each request is its own batch of one on the server; the in-process A/B at batch size 1 must match it
    assert main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(tmp_path / "ip"), *TINY, "--batch-size", "1"]) == 0
    for arm in ("A", "B"):
        assert _generations(tmp_path / "ep", arm) == _generations(tmp_path / "ip", arm), arm
    rep = json.loads((tmp_path / "ep" / "report.json").read_text())
    assert rep["arms"]["B"]["implementation"].startswith("endpoint http://127.0.0.1:")
    assert rep["agreement"]["top1"] is None and rep["agreement"]["identical_generations"] == 1.0


def test_endpoint_arguments_are_checked(tmp_path, capsys):
    base = ["gsm8k", "--ab", "--out", str(tmp_path / "x"), *TINY]
    assert main([*base, "--endpoint-a", "http://127.0.0.1:1"]) == 2
    assert "both or neither" in capsys.readouterr().err
    assert main([*base, "--endpoint-a", "localhost:1", "--endpoint-b", "http://127.0.0.1:2"]) == 2
    assert "expected an http(s) URL" in capsys.readouterr().err
    assert main([*base, "--endpoint-a", "http://a", "--endpoint-b", "http://b", "--inject", "rope-sign"]) == 2
    assert "pass those to the servers" in capsys.readouterr().err
    assert main([*base, "--endpoint-a", "http://a", "--endpoint-b", "http://b", "--prefill-tokens", "64"]) == 2
    assert "--prefill-tokens with --endpoint-a/-b: the servers schedule their own prefill" in capsys.readouterr().err


def test_serve_rejects_a_bad_arm(capsys):
    assert main(["serve", "--arm", "c"]) == 2


@needs_data
def test_an_unreachable_endpoint_is_one_line_before_the_run(tmp_path, capsys):
    """Nothing listens on port 9: the run stops before it starts, exit 2, with one line naming the option and
    the connection error (it used to spend lm-eval's retries first, or without --data-dir go to the Hub)."""
    url = "http://127.0.0.1:9"
    rc = main(["gsm8k", "--ab", "--data-dir", str(DATA), "--out", str(tmp_path / "down"), *TINY,
               "--endpoint-a", url, "--endpoint-b", url])
    assert rc == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"accval: error: --endpoint-a {url}: nothing answers there ("), lines


class _Models:
    """A server answering ``GET /v1/models`` with one model id (what vLLM, SGLang and accval serve say)."""

    def __init__(self, model_id: str | None):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"object": "list", "data": [{"id": model_id, "object": "model"}]}).encode()
                self.send_response(200 if model_id and self.path == "/v1/models" else 404)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@needs_data
def test_the_servers_models_must_agree_and_the_sentinels_take_its_problems():
    """Two servers of different models are refused (each arm's id from GET /v1/models). Two sentinels (accval
    serve's default) are run on the sentinel's problems, as in-process: with gsm8k they scored 0 in both arms
    and read 'no regression' on nothing, and offline the client spent 29 s retrying the Hub first. A server
    that does not say is not judged (its requests meet lm-eval's retries)."""
    from accval.gsm8k import config
    from accval.sentinel import data as sentinel_data

    a, b, silent = _Models("sentinel"), _Models("deepseek-ai/DeepSeek-V4"), _Models(None)
    try:
        assert config.served_model(a.url) == "sentinel" and config.served_model(a.url + "/v1/completions/") == "sentinel"
        assert config.served_model(silent.url) is None
        with pytest.raises(ValueError, match="--endpoint-a serves model 'sentinel' and --endpoint-b 'deepseek-ai/"):
            config.validate(config.Settings(endpoint_a=a.url, endpoint_b=b.url, ranks=None))
        both = config.validate(config.Settings(endpoint_a=a.url, endpoint_b=a.url, ranks=None))
        assert both.data_dir == str(sentinel_data.write_splits())
        with pytest.raises(ValueError, match="the servers' model, sentinel, answers only its own problems"):
            config.validate(config.Settings(endpoint_a=a.url, endpoint_b=a.url, data_dir=str(DATA), ranks=None))
        assert config.validate(config.Settings(endpoint_a=a.url, endpoint_b=silent.url, data_dir=str(DATA), ranks=None)).data_dir
    finally:
        for server in (a, b, silent):
            server.close()


def test_an_endpoint_where_nothing_answers_is_named_before_the_run():
    """A URL where nothing listens is a usage error naming its option, before any data is fetched: the run
    used to take it for a server that does not say its model, went to the Hub for gsm8k and ended 25 s later on
    "Couldn't reach 'openai/gsm8k'", never naming the endpoint."""
    import socket

    from accval.gsm8k import config

    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ConnectionError):
        config.served_model(closed)
    live = _Models("sentinel")
    try:
        with pytest.raises(ValueError, match=rf"--endpoint-b {closed}: nothing answers there \(.*\); start its server"):
            config.validate(config.Settings(endpoint_a=live.url, endpoint_b=closed, ranks=None))
        assert config.served_models(config.Settings(endpoint_a=live.url, endpoint_b=closed), must_answer=False) == \
            {"A": "sentinel", "B": None}
    finally:
        live.close()
