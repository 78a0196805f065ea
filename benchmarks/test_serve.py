"""`specfw serve` against `specfw run` (Run in-process) on the same prompts and models; the prompt cache's saving.

Run:  pytest benchmarks/test_serve.py --benchmark-only -s

Two `specfw serve` subprocesses on loopback (one with the prompt cache, one
with --no-prompt-cache) and the same default pair loaded in this process.
``test_serve_vs_run`` alternates, per prompt and round, a streaming request
through the official ``openai`` client (to the server without the prompt
cache, so both prefill every prompt) and an in-process Run, and prints time to
first token, decode tokens/s (first to last token as received), their ratio
over all prompts (goal: the server decodes at >= 0.95x of `specfw run`) and
the server's decode overhead per token. ``test_prompt_cache_saving`` plays the same 4-turn chat against both
servers and prints each turn's prefill time (time to the first token, as the
server reports it) with and without the cache.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import pytest

from specfw.config import RunConfig
from specfw.models import load_model
from specfw.run import Run

PROMPTS = ["The capital of France is", "Once upon a time, there was a little"]
TOKENS = 24
CHAT_TOKENS = 16
ROUNDS = 2
GOAL = 0.95
SYSTEM = (
    "You are a careful assistant for a travel agency in Warsaw. Answer in short, plain sentences. "
    "When a question is about a city, name its country, its river and one famous building. When a question is "
    "about a river, name its source, its mouth and the largest cities on its banks. Never invent opening hours, "
    "prices or phone numbers; say that the customer should check them on the official website. Keep every answer "
    "under fifty words, use metric units, and write dates as day, month name and year."
)
TURNS = ["Tell me about Kraków.", "Which river flows through it?", "Where does that river end?",
         "Name one more city on it."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, *args: str) -> None:
        from openai import OpenAI

        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "specfw.cli", "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="none", max_retries=0, timeout=600)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "server exited"
            try:
                self.client.models.list()
                return
            except Exception:
                time.sleep(0.5)
        raise AssertionError("server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


@pytest.fixture(scope="module")
def servers():
    cached, uncached = _Server(), _Server("--no-prompt-cache")
    yield cached, uncached
    cached.stop()
    uncached.stop()


@pytest.fixture(scope="module")
def pair():
    return load_model("gemma3-270m"), load_model("smollm2-135m-instruct")


def _through_server(server: _Server, prompt: str) -> dict:
    """Stream one completion; times are taken where the client receives the chunks."""
    start = time.perf_counter()
    times, text = [], []
    for chunk in server.client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=TOKENS, stream=True):
        piece = chunk.choices[0].text if chunk.choices else ""
        if piece:
            times.append(time.perf_counter())
            text.append(piece)
    return {"text": "".join(text), "ttft": times[0] - start, "decode_s": times[-1] - times[0], "total": times[-1] - start}


def _in_process(pair, prompt: str) -> dict:
    target, draft = pair
    start = time.perf_counter()
    run = Run(RunConfig(prompt=prompt, max_tokens=TOKENS), target=target, draft=draft)
    times, text = [], []
    for token in run.stream():
        times.append(time.perf_counter())
        text.append(token.text)
    return {"text": "".join(text), "ttft": times[0] - start, "decode_s": times[-1] - times[0], "total": times[-1] - start,
            "generated": run.stats.generated}


def test_server_stream(benchmark, servers):
    benchmark.group = "serve vs run"
    result = benchmark.pedantic(_through_server, args=(servers[1], PROMPTS[0]), rounds=ROUNDS, warmup_rounds=1)
    assert result["text"]


def test_run_in_process(benchmark, pair):
    benchmark.group = "serve vs run"
    result = benchmark.pedantic(_in_process, args=(pair, PROMPTS[0]), rounds=ROUNDS, warmup_rounds=1)
    assert result["generated"] == TOKENS


def test_serve_vs_run(benchmark, servers, pair):
    """Alternate server and in-process runs per prompt; best of ROUNDS each; print the table."""
    rows, totals = [], []
    for prompt in PROMPTS:
        best = {"serve": None, "run": None}
        for _ in range(ROUNDS):
            for name, measure in (("serve", lambda: _through_server(servers[1], prompt)),
                                  ("run", lambda: _in_process(pair, prompt))):
                m = measure()
                if best[name] is None or m["decode_s"] < best[name]["decode_s"]:
                    best[name] = m
        assert best["serve"]["text"] == best["run"]["text"], prompt  # lossless through the server too
        n = best["run"]["generated"]
        serve_tps, run_tps = (n - 1) / best["serve"]["decode_s"], (n - 1) / best["run"]["decode_s"]
        overhead_ms = (best["serve"]["decode_s"] - best["run"]["decode_s"]) / (n - 1) * 1000
        rows.append((prompt, best["serve"]["ttft"], best["run"]["ttft"], serve_tps, run_tps, serve_tps / run_tps,
                     overhead_ms))
        totals.append((n - 1, best["serve"]["decode_s"], best["run"]["decode_s"]))
    ratio = sum(t[2] for t in totals) / sum(t[1] for t in totals)  # same tokens on both sides: time ratio
    benchmark.extra_info.update(decode_ratio=ratio, goal=GOAL)
    benchmark.group = "ratio"
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\n{'prompt':40} {'ttft serve':>10} {'ttft run':>9} {'tok/s serve':>11} {'tok/s run':>9} "
          f"{'ratio':>6} {'overhead ms/tok':>15}")
    for prompt, ttft_s, ttft_r, tps_s, tps_r, r, over in rows:
        print(f"{prompt[:40]:40} {ttft_s:10.3f} {ttft_r:9.3f} {tps_s:11.2f} {tps_r:9.2f} {r:6.3f} {over:15.2f}")
    print(f"serve_vs_run decode = {ratio:.3f} (all prompts; goal >= {GOAL})")


def _chat(server: _Server) -> list[tuple[float, int, int]]:
    """The 4-turn chat; per turn: prefill seconds (time to first token), prompt tokens, cached prompt tokens."""
    # Another prompt first, so the chat starts from nothing cached (the cache keeps one conversation).
    server.client.completions.create(model="gemma3-270m", prompt="Hello", max_tokens=1)
    messages = [{"role": "system", "content": SYSTEM}]
    out = []
    for turn in TURNS:
        messages.append({"role": "user", "content": turn})
        response = server.client.chat.completions.create(model="gemma3-270m", messages=messages,
                                                         max_tokens=CHAT_TOKENS)
        info = response.model_extra["specfw"]
        out.append((info["prompt_seconds"], response.usage.prompt_tokens, info["prompt_cached_tokens"],
                    response.choices[0].message.content))
        messages.append({"role": "assistant", "content": response.choices[0].message.content})
    return out


def test_prompt_cache_saving(benchmark, servers):
    cached, uncached = servers
    best: dict[str, list] = {}
    for _ in range(ROUNDS):
        for name, server in (("cache", cached), ("no cache", uncached)):
            turns = _chat(server)
            if name not in best:
                best[name] = turns
            else:
                best[name] = [min(a, b, key=lambda t: t[0]) for a, b in zip(best[name], turns)]
    assert [t[3] for t in best["cache"]] == [t[3] for t in best["no cache"]]  # same replies with and without
    saved = sum(t[0] for t in best["no cache"]) - sum(t[0] for t in best["cache"])
    benchmark.extra_info.update(prefill_saved_s=saved)
    benchmark.group = "prompt cache"
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\n{'turn':>4} {'prompt tok':>10} {'cached tok':>10} {'prefill cache s':>15} {'prefill no cache s':>18}")
    for i, (c, u) in enumerate(zip(best["cache"], best["no cache"]), 1):
        print(f"{i:4d} {c[1]:10d} {c[2]:10d} {c[0]:15.3f} {u[0]:18.3f}")
    print(f"prompt cache saves {saved:.3f}s of prefill over the 4-turn chat "
          f"({sum(t[0] for t in best['no cache']):.3f}s -> {sum(t[0] for t in best['cache']):.3f}s)")

