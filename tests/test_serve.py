"""`specfw serve` as a user meets it: a real server subprocess on 127.0.0.1, the official `openai` client.

Greedy text through the server must equal `specfw run --json` and the
target alone; a bounded load of concurrent clients gets right answers or
clean 503s; faults get the right status and an OpenAI error body and leave
the server running; a client that leaves, queued or generating, frees its
place at once; SIGTERM drains the requests in flight, then exits 0, and a
second signal stops them at once. Traffic goes to loopback only; every wait is
bounded (hang guards, no timing asserts).

The first tests run on a --max-batch 1 server (one at a time, the single
path); the continuous-batching ones (--max-batch > 1, the default) send
mixed batches (drafters, translators, k, k policies, the target alone) on a
tiny random-weight pair and on the default pair, and must equal the target
alone and `specfw run`; the chi-square sampling test goes through batches that
mix target-alone and speculative rows; a load of 16 clients with walk-aways
gets right text or clean 503s.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from specfw.cli import main

API_KEY = "test-key-1234"
MAX_BODY = 256 * 1024
PROMPTS = ["The capital of France is", "Once upon a time, there was a little"]
MAX_TOKENS = 10
START_TIMEOUT_S = 300  # first use imports the default pair into the session's model cache
REQUEST_TIMEOUT_S = 300
HANG_GUARD_S = 60  # what should happen at once must happen within this (a guard against hangs, not a timing)
LONG = 2000  # max_tokens of a generation that is still running when a test acts on it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, what: str, timeout: float = HANG_GUARD_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _session_env(tmp_path_factory) -> dict:
    # The same model cache as every other test of the session (conftest's _isolated_cache).
    return {**os.environ, "SPECFW_CACHE": str(tmp_path_factory.getbasetemp() / "specfw-cache")}


class Server:
    """A `specfw serve` subprocess on a free loopback port."""

    def __init__(self, env: dict, *args: str, api_key: str | None = None) -> None:
        self.port = _free_port()
        self.api_key = api_key
        extra = ["--api-key", api_key] if api_key else []
        # The server's output goes to a file: a pipe nobody reads could fill and block it.
        self.log = tempfile.NamedTemporaryFile("w+", prefix="specfw-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "specfw.cli", "serve", "--port", str(self.port), *extra, *args],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.output()}")
            try:
                if self.request("GET", "/health", key=None)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError("server did not answer /health in time")

    def output(self) -> str:
        """What the server printed so far (its last 4,000 characters)."""
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def headers(self, key: str | None = "default") -> dict:
        key = self.api_key if key == "default" else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                key: str | None = "default"):
        """A request; a header given as None is not sent (Content-Type: application/json unless told)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            sent = {"Content-Type": "application/json", **self.headers(key), **(headers or {})}
            conn.request(method, path, body=body, headers={k: v for k, v in sent.items() if v is not None})
            response = conn.getresponse()
            data = response.read()
            return response.status, dict(response.getheaders()), data
        finally:
            conn.close()

    def get(self, path: str):
        status, _, data = self.request("GET", path)
        return status, json.loads(data)

    def health(self) -> dict:
        """/health, asked as a probe asks: without the API key."""
        status, _, data = self.request("GET", "/health", key=None)
        assert status == 200, data
        return json.loads(data)

    def stats(self) -> dict:
        status, stats = self.get("/stats")
        assert status == 200, stats
        return stats

    def open_request(self, payload: dict, path: str = "/v1/completions") -> http.client.HTTPConnection:
        """A request sent on a raw connection whose answer is not read (the caller reads it or walks away)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        conn.request("POST", path, body=json.dumps(payload).encode(),
                     headers={"Content-Type": "application/json", **self.headers()})
        return conn

    def post(self, path: str, payload, **kwargs):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, headers, data = self.request("POST", path, body, **kwargs)
        return status, headers, json.loads(data)

    def client(self, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key or "none", max_retries=0,
                      timeout=REQUEST_TIMEOUT_S, **kwargs)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One request at a time (--max-batch 1: the single path, as before batching); the batched server's tests
    are further down."""
    srv = Server(_session_env(tmp_path_factory), "--max-queue", "3", "--max-body-bytes", str(MAX_BODY),
                 "--max-batch", "1", api_key=API_KEY)
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The target alone's greedy text for a prompt, computed in this process (same cache, same models)."""
    from specfw.config import RunConfig
    from specfw.models.loading import load_model
    from specfw.run import Run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPECFW_CACHE", _session_env(tmp_path_factory)["SPECFW_CACHE"])
        target = load_model("gemma3-270m")
    texts: dict[str, str] = {}

    def text(prompt: str, max_tokens: int = MAX_TOKENS) -> str:
        if (prompt, max_tokens) not in texts:
            config = RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens)
            texts[prompt, max_tokens] = Run(config, target=target).result().text
        return texts[prompt, max_tokens]

    return text


def _chat_reply(expected, messages: list[dict]) -> str:
    """The target alone's reply to a chat: the base target has no chat template, so the plain transcript,
    cut where the model starts the user's next turn."""
    from specfw.serve.prompts import TRANSCRIPT_STOP, transcript

    return expected(transcript(messages)).split(TRANSCRIPT_STOP)[0]


def _error(body: dict) -> dict:
    assert set(body) == {"error"}, body
    assert {"message", "type", "code"} <= set(body["error"]), body
    assert body["error"]["message"], body
    return body["error"]


# --------------------------------------------------------------------------- fast: bad flags


def test_bad_serve_flags_are_one_line(capsys):
    for args, needle in ((["--port", "70000"], "--port"), (["--max-queue", "-1"], "--max-queue"),
                         (["--max-body-bytes", "0"], "--max-body-bytes"), (["--max-batch", "0"], "--max-batch"),
                         (["--max-batch", "-2"], "--max-batch"), (["--max-batch", "four"], "--max-batch"),
                         (["--max-batch", "1.5"], "--max-batch")):
        assert main(["serve", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("specfw: error: ") and needle in err[0], err


def test_port_in_use_and_unknown_plugin_are_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot listen on 127.0.0.1" in err[0], err
    assert main(["serve", "--port", str(_free_port()), "--translator", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("specfw: error: unknown translator 'nope'"), err


def test_stop_sequences_are_cut_and_held_back():
    from specfw.serve.engine import StopText

    stop = StopText(["\nUSER:", "END"])
    sent = []
    for piece in ["Paris", ".", "\n", "US", "ER:", " more"]:
        text, hit = stop.feed(piece)
        sent.append(text)
        if hit:
            break
    assert "".join(sent) == "Paris." and hit
    free = StopText(["END"])
    assert free.feed("EN") == ("", False) and free.feed("D of") == ("", True)
    assert StopText(["x"]).feed("abc") == ("abc", False) and StopText([]).feed("abc") == ("abc", False)


# --------------------------------------------------------------------------- real server, real client


@pytest.mark.slow
def test_models_and_health(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["gemma3-270m"]
    # /health needs no key (probes do not carry one) and tells liveness and queue state, nothing more.
    assert server.health() == {"status": "ok", "busy": False, "active": 0, "waiting": 0}
    assert server.request("HEAD", "/health", key=None)[0] == 200
    stats = server.stats()  # the model and the counters are behind the key
    assert stats["model"] == "gemma3-270m" and stats["max_queue"] == 3 and stats["completed"] >= 0, stats
    assert server.request("GET", "/stats", key=None)[0] == 401


@pytest.mark.slow
def test_completions_equal_specfw_run_and_the_target_alone(server, expected, tmp_path_factory):
    prompt = PROMPTS[0]
    run = subprocess.run([sys.executable, "-m", "specfw.cli", "run", "--prompt", prompt, "--max-tokens",
                          str(MAX_TOKENS), "--json"], env=_session_env(tmp_path_factory), capture_output=True,
                         text=True, timeout=REQUEST_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    cli_text = json.loads(run.stdout)["text"]
    assert cli_text == expected(prompt)

    client = server.client()
    response = client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
    assert response.choices[0].text == cli_text
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == MAX_TOKENS and response.usage.prompt_tokens > 0
    info = response.model_extra["specfw"]
    assert info["plugins"]["translator"] == "context" and info["proposed"] >= info["accepted"] >= 0
    assert info["cycles"] > 0 and 0 <= info["acceptance_rate"] <= 1
    # accepted: the draft ids among the tokens sent; verified_accepted: the verifier's count, never fewer
    assert info["verified_accepted"] >= info["accepted"] and info["accepted"] <= response.usage.completion_tokens
    assert info["acceptance_rate"] == pytest.approx(info["accepted"] / info["proposed"] if info["proposed"] else 0.0)

    chunks = list(client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=MAX_TOKENS, stream=True,
                                            stream_options={"include_usage": True}))
    # As OpenAI sends it: the usage in a last chunk of its own with no choices, every other chunk's usage null.
    *text_chunks, usage_chunk = chunks
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == MAX_TOKENS
    assert usage_chunk.usage.total_tokens == usage_chunk.usage.prompt_tokens + MAX_TOKENS
    assert all(c.usage is None and len(c.choices) == 1 for c in text_chunks)
    assert "".join(c.choices[0].text for c in text_chunks) == cli_text
    assert len(text_chunks) > 2 and text_chunks[-1].choices[0].finish_reason == "length"
    assert text_chunks[-1].model_extra["specfw"]["cycles"] > 0

    stop = " France"
    assert stop in cli_text
    for stream in (False, True):
        got = client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=MAX_TOKENS, stop=[stop],
                                        stream=stream)
        pieces = list(got) if stream else [got]
        assert "".join(c.choices[0].text for c in pieces) == cli_text.split(stop)[0]
        assert pieces[-1].choices[0].finish_reason == "stop"
        if not stream:  # a stop string ends the text and the count of accepted ids sent with it
            info = got.model_extra["specfw"]
            assert info["accepted"] <= got.usage.completion_tokens and info["verified_accepted"] >= info["accepted"]

    # Sampling: the seed makes a request repeatable; the verifier is the sampling one.
    sampled = [client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=6, temperature=0.9, seed=7)
               for _ in range(2)]
    assert sampled[0].choices[0].text == sampled[1].choices[0].text
    assert sampled[0].model_extra["specfw"]["plugins"]["verifier"] == "sample"


@pytest.mark.slow
def test_chat_completions_equal_the_target_alone(server, expected):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    want = _chat_reply(expected, messages)
    client = server.client()
    response = client.chat.completions.create(model="gemma3-270m", messages=messages, max_tokens=MAX_TOKENS)
    assert response.choices[0].message.content == want
    assert response.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="gemma3-270m", messages=messages, max_tokens=MAX_TOKENS,
                                            stream=True, extra_body={"translator": "tli", "k": 3})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].model_extra["specfw"]["plugins"]["translator"] == "tli"
    assert chunks[-1].model_extra["specfw"]["plugins"]["k"] == 3


@pytest.mark.slow
def test_a_chat_follow_up_reuses_both_caches(server, expected):
    client = server.client()
    messages = [{"role": "user", "content": "Name a large river in Europe."}]
    infos = []
    for follow_up in ("Which countries does it flow through?", "How long is it?"):
        response = client.chat.completions.create(model="gemma3-270m", messages=messages, max_tokens=MAX_TOKENS)
        reply = response.choices[0].message.content
        assert reply == _chat_reply(expected, messages)
        infos.append(response.model_extra["specfw"])
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": follow_up}]
    assert infos[-1]["prompt_cached_tokens"] > 10 and infos[-1]["draft_cached_tokens"] > 10, infos


@pytest.mark.slow
def test_faults_get_openai_errors_and_the_server_keeps_running(server):
    path = "/v1/completions"
    ok = {"prompt": PROMPTS[0], "max_tokens": 2}
    cases = [
        (b'{"prompt": "x", "max_tokens": ', {}, 400, "invalid_json"),
        ({**ok, "model": "gpt-4"}, {}, 404, "model_not_found"),
        ({**ok, "translator": "nope"}, {}, 400, "invalid_value"),
        ({**ok, "verifier": "nope"}, {}, 400, "invalid_value"),
        ({**ok, "frobnicate": 1}, {}, 400, "unknown_field"),
        ({**ok, "max_tokens": 0}, {}, 400, "invalid_value"),
        ({**ok, "max_tokens": 10**9}, {}, 400, "context_length_exceeded"),
        ({**ok, "prompt": " word" * 40000}, {}, 400, "context_length_exceeded"),
        ({**ok, "prompt": "x" * (MAX_BODY + 1)}, {}, 413, "request_too_large"),
        ({**ok, "temperature": -1}, {}, 400, "invalid_value"),
        (ok, {"key": "wrong-key"}, 401, "invalid_api_key"),
        (ok, {"key": None}, 401, "invalid_api_key"),
    ]
    for payload, kwargs, status, code in cases:
        got, _, body = server.post(path, payload, **kwargs)
        assert got == status, (payload if isinstance(payload, bytes) else str(payload)[:80], got, body)
        assert _error(body)["code"] == code, body
    got, _, body = server.post("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]})
    assert got == 400 and _error(body)["param"].startswith("messages")
    status, _, data = server.request("GET", "/v1/nothing-here")
    assert status == 404 and _error(json.loads(data))["type"] == "not_found_error"
    for path in ("/stats", "/v1/models", "/v1/nothing-here"):  # the key is checked before anything else
        status, _, data = server.request("GET", path, key=None)
        assert status == 401 and _error(json.loads(data))["code"] == "invalid_api_key"
    status, _, data = server.request("POST", path, b'{"prompt": ', key="wrong-key")
    assert status == 401
    # The official client raises its own error types from these bodies.
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="nope", prompt="x", max_tokens=2)
    assert server.health()["status"] == "ok"
    assert server.client().completions.create(model="gemma3-270m", prompt=PROMPTS[0], max_tokens=2).choices[0].text


def _walk_away(conn: http.client.HTTPConnection) -> None:
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


@pytest.mark.slow
def test_fields_clients_send_are_served_or_refused_by_name(server, expected):
    import openai

    client = server.client()
    # seed: 0..2^32-1; outside it a 400 naming the field, in OpenAI's shape.
    for seed in (-1, 2**32, 2**70):
        got, _, body = server.post("/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 2, "seed": seed})
        error = _error(body)
        assert got == 400 and error["param"] == "seed" and error["message"].startswith("seed: "), body
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="gemma3-270m", prompt=PROMPTS[0], max_tokens=2, seed=-1)
    # Seeds that differ only above bit 31 draw apart (they once shared a stream).
    texts = {seed: client.completions.create(model="gemma3-270m", prompt=PROMPTS[1], max_tokens=16, temperature=2.0,
                                             seed=seed).choices[0].text for seed in (5, 5 + 2**31)}
    assert texts[5] != texts[5 + 2**31], texts
    assert client.completions.create(model="gemma3-270m", prompt=PROMPTS[0], max_tokens=2, temperature=1.0,
                                     seed=2**32 - 1).choices[0].text is not None

    # presence_penalty / frequency_penalty: 0 is served, anything else refused by name.
    plain = client.completions.create(model="gemma3-270m", prompt=PROMPTS[0], max_tokens=MAX_TOKENS,
                                      presence_penalty=0, frequency_penalty=0.0)
    assert plain.choices[0].text == expected(PROMPTS[0])
    for name in ("presence_penalty", "frequency_penalty"):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="gemma3-270m", max_tokens=2, **{name: 0.5},
                                           messages=[{"role": "user", "content": "Hi"}])
        assert raised.value.body["param"] == name and raised.value.body["code"] == "unsupported_value"
        assert raised.value.body["message"].startswith(f"{name}: only 0")
        got, _, body = server.post("/v1/completions", {"prompt": "x", "max_tokens": 2, name: 3})
        assert got == 400 and _error(body)["param"] == name, body

    # An agent's history: an assistant turn with null content and a tool call, then the tool's result.
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
    ]
    rendered = [{"role": "user", "content": history[0]["content"]},
                {"role": "assistant", "content": "", "tool_calls": history[1]["tool_calls"]},
                {"role": "tool", "content": "Sunny, 21 C", "tool_call_id": "call_1"}]
    reply = client.chat.completions.create(model="gemma3-270m", messages=history, max_tokens=MAX_TOKENS)
    assert reply.choices[0].message.content == _chat_reply(expected, rendered)
    for bad, param in (({"role": "user", "content": None}, "messages.0"),
                       ({"role": "tool", "content": "x", "tool_calls": []}, "messages.0")):
        got, _, body = server.post("/v1/chat/completions", {"messages": [bad], "max_tokens": 2})
        assert got == 400 and _error(body)["param"] == param, body


@pytest.mark.slow
def test_stream_usage_is_a_chunk_of_its_own_in_chat(server):
    chunks = list(server.client().chat.completions.create(
        model="gemma3-270m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == chunks[-1].usage.total_tokens - \
        chunks[-1].usage.prompt_tokens
    assert chunks[-2].choices[0].finish_reason is not None and all(c.usage is None for c in chunks[:-1])
    plain = list(server.client().chat.completions.create(
        model="gemma3-270m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True))
    assert all(c.choices and c.usage is None for c in plain)  # no usage chunk unless asked for


@pytest.mark.slow
def test_a_body_that_is_not_sent_as_json_is_told_so(server):
    body = json.dumps({"prompt": PROMPTS[0], "max_tokens": 2}).encode()
    for content_type, said in ((None, "without a Content-Type"),
                               ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
                               ("text/plain", "text/plain")):
        for path in ("/v1/completions", "/v1/chat/completions"):
            status, _, data = server.request("POST", path, body, headers={"Content-Type": content_type})
            error = _error(json.loads(data))
            assert status == 415 and error["code"] == "unsupported_media_type", data
            assert "Content-Type: application/json" in error["message"] and said in error["message"], error
    status, _, data = server.request("POST", "/v1/completions", body,
                                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, data
    status, _, _ = server.request("POST", "/v1/completions", body, headers={"Content-Type": None}, key="wrong")
    assert status == 401  # the key is still checked first


def test_a_template_that_cannot_render_the_messages_is_named(tmp_path):
    from types import SimpleNamespace

    from specfw.serve.prompts import TemplateRefused, chat_ids, transcript

    template = ("{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
                "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
                "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))

    class Tok:
        add_bos, bos_id = False, None

        def encode_with_specials(self, text):
            return [ord(c) for c in text]

        encode = encode_with_specials

    loaded, tok = SimpleNamespace(path=tmp_path), Tok()
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]
    assert chat_ids(loaded, tok, ok) == [ord(c) for c in "<user>hi<assistant>"]
    messages = [*ok, {"role": "tool", "content": "42", "tool_call_id": "c1"}]
    with pytest.raises(TemplateRefused) as refused:
        chat_ids(loaded, tok, messages)
    assert str(refused.value).startswith("messages: the target model's chat template cannot render these messages "
                                         "(they include 'tool' messages): Only user and assistant roles")
    # The drafter's side only proposes: it falls back to the transcript.
    assert chat_ids(loaded, tok, messages, fallback=True) == chat_ids(None, tok, messages)
    assert transcript(messages).endswith("TOOL: 42\nASSISTANT:")


@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_frees_the_slot(server, expected):
    before = server.stats()
    conn = server.open_request({"prompt": PROMPTS[1], "max_tokens": LONG, "stream": True})
    response = conn.getresponse()
    assert response.status == 200
    while not response.readline().startswith(b"data: {"):  # the first token has been generated
        pass
    _walk_away(conn)  # the client goes away mid-generation
    # The next request is served (the abandoned one stops within a cycle, far short of its tokens).
    answer = server.client().completions.create(model="gemma3-270m", prompt=PROMPTS[0], max_tokens=MAX_TOKENS)
    assert answer.choices[0].text == expected(PROMPTS[0])
    after = server.stats()
    assert after["cancelled"] == before["cancelled"] + 1 and after["busy"] is False, (before, after)


@pytest.mark.slow
def test_a_non_streaming_client_that_disconnects_frees_the_slot_at_once(server, expected):
    """Its tokens keep coming, yet its leaving is seen at once (not only after a pause between events)."""
    before = server.stats()
    for attempt in range(3):
        conn = server.open_request({"prompt": PROMPTS[attempt % 2], "max_tokens": LONG})
        _wait_for(lambda: server.health()["busy"], "the generation starts")
        time.sleep(0.3)  # a few cycles in: pieces are flowing
        _walk_away(conn)
        _wait_for(lambda: not server.health()["busy"], "a disconnected client's generation stops")
    after = server.stats()
    # Stopped, not run to its end: every one counted as cancelled, none as completed.
    assert after["cancelled"] == before["cancelled"] + 3 and after["completed"] == before["completed"], (before, after)
    answer = server.client().completions.create(model="gemma3-270m", prompt=PROMPTS[0], max_tokens=MAX_TOKENS)
    assert answer.choices[0].text == expected(PROMPTS[0])


@pytest.mark.slow
def test_a_queued_client_that_leaves_frees_its_place_at_once(server, expected):
    before = server.stats()
    running = server.open_request({"prompt": PROMPTS[1], "max_tokens": LONG})
    _wait_for(lambda: server.health()["busy"], "the generation starts")
    queued = [server.open_request({"prompt": PROMPTS[0], "max_tokens": 4, "stream": i == 0}) for i in range(3)]
    _wait_for(lambda: server.health()["waiting"] == 3, "three requests queue up")
    for conn in queued:
        _walk_away(conn)
    # Their places are free while the first request is still generating (not when they reach the head).
    _wait_for(lambda: server.health()["waiting"] == 0, "queued clients that left give their places up")
    assert server.health()["busy"] is True
    assert server.stats()["cancelled"] == before["cancelled"] + 3
    again = [server.open_request({"prompt": PROMPTS[0], "max_tokens": 4}) for _ in range(3)]  # the places are there
    _wait_for(lambda: server.health()["waiting"] == 3, "new requests take the freed places")
    _walk_away(running)
    for conn in again:
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["choices"][0]["text"] == expected(PROMPTS[0], 4)
        conn.close()
    after = server.stats()
    assert after["cancelled"] == before["cancelled"] + 4 and after["completed"] == before["completed"] + 3


@pytest.mark.slow
def test_concurrent_clients_get_right_text_or_a_clean_503(server, expected):
    """8 clients x 4 requests, half of them streaming, against a queue of 3: answers are right or 503s."""
    import openai

    def client_session(index: int) -> list[str]:
        client = server.client()
        outcomes = []
        for turn in range(4):
            prompt = PROMPTS[(index + turn) % len(PROMPTS)]
            try:
                if (index + turn) % 2:
                    chunks = client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=6, stream=True)
                    text = "".join(c.choices[0].text for c in chunks)
                else:
                    text = client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=6).choices[0].text
                assert text == expected(prompt, 6), (prompt, text)
                outcomes.append("ok")
            except openai.APIStatusError as exc:
                assert exc.status_code == 503, exc
                assert int(exc.response.headers["retry-after"]) >= 1
                assert exc.body["code"] == "queue_full", exc.body  # the client hands over the inner error object
                assert "(--max-queue 3)" in exc.body["message"], exc.body  # the bound, not a count
                outcomes.append("503")
        return outcomes

    for prompt in PROMPTS:
        expected(prompt, 6)  # computed before the clients start
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(client_session, i) for i in range(8)]
        outcomes = [o for f in futures for o in f.result(timeout=900)]
    assert len(outcomes) == 32 and "ok" in outcomes and "503" in outcomes, outcomes
    assert server.health()["waiting"] == 0


@pytest.mark.slow
def test_sigterm_drains_every_request_in_flight_then_exits_0(tmp_path_factory, expected):
    """The default (batched) server: SIGTERM lets every generating and queued request finish, then exits 0."""
    srv = Server(_session_env(tmp_path_factory), "--max-batch", "2")
    try:
        asks = [(PROMPTS[i % 2], MAX_TOKENS + 2 * i) for i in range(3)]  # two decode together, one waits
        for prompt, n in asks:
            expected(prompt, n)
        results = {}

        def ask(i):
            prompt, n = asks[i]
            results[i] = srv.client().completions.create(model="gemma3-270m", prompt=prompt,
                                                         max_tokens=n).choices[0].text

        asking = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for thread in asking:
            thread.start()
        _wait_for(lambda: srv.health()["active"] == 2 and srv.health()["waiting"] == 1, "two generate, one waits",
                  REQUEST_TIMEOUT_S)
        srv.proc.send_signal(signal.SIGTERM)
        for thread in asking:
            thread.join(timeout=REQUEST_TIMEOUT_S)
        assert [results.get(i) for i in range(3)] == [expected(prompt, n) for prompt, n in asks]
        assert srv.proc.wait(timeout=120) == 0, srv.output()
    finally:
        srv.stop()


@pytest.mark.slow
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_second_signal_during_the_drain_stops_at_once(tmp_path_factory, second):
    """Batched (two streams decode together, a third request waits): the second signal ends them all."""
    srv = Server(_session_env(tmp_path_factory), "--max-batch", "2")
    try:
        streams = [srv.open_request({"prompt": PROMPTS[i], "max_tokens": LONG, "stream": True}) for i in range(2)]
        responses = [stream.getresponse() for stream in streams]
        for response in responses:
            assert response.status == 200
            while not response.readline().startswith(b"data: {"):  # generating
                pass
        queued = srv.open_request({"prompt": PROMPTS[0], "max_tokens": LONG})
        _wait_for(lambda: srv.health()["waiting"] == 1, "a third request queues up")
        assert srv.health()["active"] == 2
        srv.proc.send_signal(second)
        _wait_for(lambda: "draining the requests in flight" in srv.output(), "the first signal is taken")
        assert srv.proc.poll() is None  # draining: the stream goes on
        srv.proc.send_signal(second)
        assert srv.proc.wait(timeout=HANG_GUARD_S) == 128 + second, srv.output()
        # Each stream was closed cleanly: an error event, then the end of the chunked body (no IncompleteRead).
        for response in responses:
            rest = response.read().decode()
            events = [json.loads(line[len("data: "):]) for line in rest.splitlines() if line.startswith("data: {")]
            assert events and events[-1]["error"]["code"] == "server_shutting_down", rest[-500:]
        answer = queued.getresponse()
        assert answer.status == 503 and _error(json.loads(answer.read()))["code"] == "server_shutting_down"
        log = srv.output()
        assert "stopping the requests in flight" in log and "Traceback" not in log and "ERROR" not in log, log
    finally:
        srv.stop()


# --------------------------------------------------------------------------- continuous batching (--max-batch B > 1)

TINY_PAIR = ("--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5")
TINY = "tiny-random-mistral"
# One batch's worth of requests, each with its own settings: drafters mlx, lookup, lookup+mlx and none (the
# target alone), translators, k, k policies; different prompts and lengths.
MIXED = [
    ("The capital of France is", 12, {}),
    ("Once upon a time", 20, {"drafter": "lookup", "k": 3}),
    ("Ala ma kota, a kot ma", 16, {"drafter": "lookup+mlx"}),
    ("Water boils at", 9, {"baseline": True}),
    ("def fib(n):\n    return", 18, {"translator": "naive", "k": 1}),
    ("The three primary colours are", 14, {"k_policy": "adaptive", "k": 3}),
    ("the the the the the", 11, {"translator": "tli", "k": 4}),
    ("Zażółć gęślą jaźń", 15, {"drafter": "mlx", "translator": "context", "k": 2}),
]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    """A batched server (--max-batch 4) on a tiny random-weight pair: gibberish text, real tokenizers, fast."""
    srv = Server(_session_env(tmp_path_factory), *TINY_PAIR, "--max-batch", "4", "--max-queue", "6")
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.fixture(scope="module")
def tiny_alone(tmp_path_factory, tiny_server):
    """The tiny target alone's greedy (text, generated ids) for a prompt (the server built the model first)."""
    from specfw.config import RunConfig
    from specfw.models.loading import load_model
    from specfw.run import Run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPECFW_CACHE", _session_env(tmp_path_factory)["SPECFW_CACHE"])
        target = load_model(TINY)
    done: dict = {}

    def alone(prompt: str, max_tokens: int) -> tuple[str, int]:
        if (prompt, max_tokens) not in done:
            result = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens), target=target).result()
            done[prompt, max_tokens] = (result.text, len(result.token_ids))
        return done[prompt, max_tokens]

    return alone


def _ask(server: Server, prompt: str, max_tokens: int, extra: dict, stream: bool, model: str = TINY):
    """One completion through the openai client: (text, completion tokens)."""
    client = server.client()
    if stream:
        chunks = list(client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, stream=True,
                                                stream_options={"include_usage": True}, extra_body=extra))
        return "".join(c.choices[0].text for c in chunks if c.choices), chunks[-1].usage.completion_tokens
    response = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, extra_body=extra)
    return response.choices[0].text, response.usage.completion_tokens


@pytest.mark.slow
def test_mixed_batches_equal_the_target_alone_and_specfw_run(tiny_server, tiny_alone, tmp_path_factory):
    want = [tiny_alone(prompt, n) for prompt, n, _ in MIXED]
    with ThreadPoolExecutor(max_workers=len(MIXED)) as pool:
        for round_ in range(2):  # all at once (4 decode together, 4 wait and join as rows free up), half streaming
            futures = [pool.submit(_ask, tiny_server, prompt, n, extra, (i + round_) % 2 == 1)
                       for i, (prompt, n, extra) in enumerate(MIXED)]
            got = [f.result(timeout=REQUEST_TIMEOUT_S) for f in futures]
            assert got == want, [(m[2], g, w) for m, g, w in zip(MIXED, got, want) if g != w]
        # Staggered: a target-alone request decodes alone (plain steps queued ahead on lazy ids), then others
        # join its batch mid-generation and leave again.
        long = pool.submit(_ask, tiny_server, MIXED[3][0], 40, {"baseline": True}, True)
        _wait_for(lambda: tiny_server.health()["active"] == 1, "the first request decodes alone")
        joined = [pool.submit(_ask, tiny_server, prompt, n, extra, False) for prompt, n, extra in MIXED[:3]]
        assert [f.result(timeout=REQUEST_TIMEOUT_S) for f in joined] == want[:3]
        assert long.result(timeout=REQUEST_TIMEOUT_S) == tiny_alone(MIXED[3][0], 40)
    assert tiny_server.stats()["peak_active"] == 4
    # `specfw run` on the same requests gives the same text.
    for prompt, n, extra in (MIXED[2], MIXED[5]):
        flags = [flag for key, value in extra.items() if key != "baseline"
                 for flag in (f"--{key.replace('_', '-')}", str(value))]
        run = subprocess.run([sys.executable, "-m", "specfw.cli", "run", *TINY_PAIR, "--prompt", prompt,
                              "--max-tokens", str(n), "--json", *flags], env=_session_env(tmp_path_factory),
                             capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["text"] == tiny_alone(prompt, n)[0], extra


@pytest.mark.slow
def test_sampling_through_the_batched_server_is_distributed_as_the_target_alone(tmp_path_factory):
    """The chi-square test of tests/test_sampling.py through batches that mix target-alone and speculative rows.

    The tiny target drafts for itself (identity translator, the mlx drafter sampling its own distribution),
    so draft tokens are often accepted and the rejection rule is exercised; different seeds on each side (the
    same seed gives the same ids by design). The test's power is shown in test_sampling.py (its lenient control).
    """
    from test_sampling import PROMPT, TEMP, _chi2_p

    runs = 300
    srv = Server(_session_env(tmp_path_factory), "--target", TINY, "--draft", TINY, "--max-batch", "8",
                 "--max-queue", "64")
    try:
        client = srv.client()

        def ids(seed: int, baseline: bool) -> tuple:
            response = client.completions.create(model=TINY, prompt=PROMPT, max_tokens=3, temperature=TEMP, seed=seed,
                                                 extra_body={"baseline": baseline, "k": 2})
            return response.choices[0].text, response.model_extra["specfw"]["accepted"]

        with ThreadPoolExecutor(max_workers=8) as pool:  # interleaved: batches mix both kinds of rows
            base = [pool.submit(ids, seed, True) for seed in range(runs)]
            spec = [pool.submit(ids, 10_000 + seed, False) for seed in range(runs)]
            base = [f.result(timeout=REQUEST_TIMEOUT_S) for f in base]
            spec = [f.result(timeout=REQUEST_TIMEOUT_S) for f in spec]
        assert srv.stats()["peak_active"] > 1
    finally:
        assert srv.stop() == 0, srv.output()
    assert sum(accepted for _, accepted in spec) > runs // 4  # draft tokens were accepted, not only resampled
    texts_base, texts_spec = [t for t, _ in base], [t for t, _ in spec]
    assert len(set(texts_base)) >= 2
    p = _chi2_p(texts_base, texts_spec)
    assert p > 0.001, f"sampling through the batch differs from the target alone (p={p:.2g})"


def _read_first_event(conn: http.client.HTTPConnection) -> None:
    response = conn.getresponse()
    assert response.status == 200
    while not response.readline().startswith(b"data: {"):
        pass


@pytest.mark.slow
def test_load_16_clients_with_disconnects_get_right_text_or_a_clean_503(tiny_server, tiny_alone):
    """16 clients x 3 requests, half streaming, every fourth client walking away mid-stream once, against
    --max-batch 4 and --max-queue 6: each answer is right or a 503 naming the bound; nothing hangs."""
    import openai

    for prompt, n, _ in MIXED:
        tiny_alone(prompt, n)

    def session(index: int) -> list[str]:
        outcomes = []
        for turn in range(3):
            prompt, n, extra = MIXED[(index + turn) % len(MIXED)]
            if index % 4 == 0 and turn == 1:  # walks away once its stream has begun
                conn = tiny_server.open_request({"prompt": prompt, "max_tokens": LONG, "stream": True, **extra})
                try:
                    _read_first_event(conn)
                    outcomes.append("left")
                except AssertionError:
                    outcomes.append("503")  # the queue was full: it never started
                _walk_away(conn)
                continue
            try:
                got = _ask(tiny_server, prompt, n, extra, stream=(index + turn) % 2 == 1)
                assert got == tiny_alone(prompt, n), (prompt, extra, got)
                outcomes.append("ok")
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and exc.body["code"] == "queue_full", exc
                assert "(--max-queue 6)" in exc.body["message"] and int(exc.response.headers["retry-after"]) >= 1
                outcomes.append("503")
        return outcomes

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(session, i) for i in range(16)]
        outcomes = [o for f in futures for o in f.result(timeout=600)]
    assert len(outcomes) == 48 and outcomes.count("ok") >= 16, outcomes
    # Every generation stops, those that were left included; the server answers afterwards.
    _wait_for(lambda: tiny_server.health() == {"status": "ok", "busy": False, "active": 0, "waiting": 0},
              "every generation ends")
    assert _ask(tiny_server, *MIXED[0], stream=False) == tiny_alone(*MIXED[0][:2])


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    """The default pair with the default --max-batch (4)."""
    srv = Server(_session_env(tmp_path_factory), "--max-queue", "3")
    yield srv
    assert srv.stop() == 0, srv.output()


@pytest.mark.slow
def test_a_batch_on_the_default_pair_equals_the_target_alone_and_specfw_run(batched, expected, tmp_path_factory):
    asks = [(PROMPTS[0], MAX_TOKENS, {}), (PROMPTS[1], MAX_TOKENS + 4, {"drafter": "lookup", "k": 3}),
            ("The three primary colours are", MAX_TOKENS, {"drafter": "lookup+mlx"}),
            ("Water boils at a temperature of", 8, {"baseline": True}),
            (PROMPTS[1], 6, {"k_policy": "adaptive", "translator": "tli"})]
    want = [expected(prompt, n) for prompt, n, _ in asks]
    with ThreadPoolExecutor(max_workers=len(asks)) as pool:
        futures = [pool.submit(_ask, batched, prompt, n, extra, i % 2 == 1, "gemma3-270m")
                   for i, (prompt, n, extra) in enumerate(asks)]
        got = [f.result(timeout=REQUEST_TIMEOUT_S)[0] for f in futures]
    assert got == want
    assert batched.stats()["peak_active"] > 1
    run = subprocess.run([sys.executable, "-m", "specfw.cli", "run", "--prompt", asks[2][0], "--max-tokens",
                          str(asks[2][1]), "--drafter", "lookup+mlx", "--json"], env=_session_env(tmp_path_factory),
                         capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["text"] == want[2]


@pytest.mark.slow
def test_batched_clients_that_leave_free_their_places_at_once(batched, expected):
    before = batched.stats()
    running = [batched.open_request({"prompt": PROMPTS[i % 2], "max_tokens": LONG, "stream": i % 2 == 0})
               for i in range(4)]
    _wait_for(lambda: batched.health()["active"] == 4, "four requests decode together")
    queued = [batched.open_request({"prompt": PROMPTS[0], "max_tokens": 4, "stream": i == 0}) for i in range(3)]
    _wait_for(lambda: batched.health()["waiting"] == 3, "three requests queue up")
    status, headers, body = batched.post("/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 2})
    assert status == 503 and "(--max-queue 3)" in _error(body)["message"] and "--max-batch 4" in body["error"]["message"]
    for conn in queued:
        _walk_away(conn)
    _wait_for(lambda: batched.health()["waiting"] == 0, "queued clients that left give their places up")
    assert batched.health()["active"] == 4
    _walk_away(running[0])  # a streaming client leaves mid-generation: its row frees, the others go on
    _wait_for(lambda: batched.health()["active"] == 3, "a generating client that left frees its row")
    _walk_away(running[1])  # a non-streaming one too
    _wait_for(lambda: batched.health()["active"] == 2, "a generating non-streaming client that left frees its row")
    answer = batched.client().completions.create(model="gemma3-270m", prompt=PROMPTS[0], max_tokens=MAX_TOKENS)
    assert answer.choices[0].text == expected(PROMPTS[0])  # decoded beside the two long ones
    for conn in running[2:]:
        _walk_away(conn)
    _wait_for(lambda: not batched.health()["busy"], "every generation stops")
    after = batched.stats()
    assert after["cancelled"] == before["cancelled"] + 7 and after["completed"] == before["completed"] + 1


@pytest.mark.slow
def test_a_chat_follow_up_reuses_both_caches_under_batching(batched, expected):
    client = batched.client()
    messages = [{"role": "user", "content": "Name a large river in Europe."}]
    infos = []
    for follow_up in ("Which countries does it flow through?", "How long is it?"):
        response = client.chat.completions.create(model="gemma3-270m", messages=messages, max_tokens=MAX_TOKENS)
        reply = response.choices[0].message.content
        assert reply == _chat_reply(expected, messages)
        infos.append(response.model_extra["specfw"])
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": follow_up}]
    assert infos[-1]["prompt_cached_tokens"] > 10 and infos[-1]["draft_cached_tokens"] > 10, infos
