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

``test_batched_serving`` (continuous batching, ``--max-batch``): two more servers, one at a time
(``--max-batch 1``) and batched (``--max-batch 8``), both on the default pair with the server's default
drafter settings and no prompt cache. At 1, 2, 4 and 8 concurrent streaming clients (one request each,
different prompts; the lone client asks LONE_ROUNDS times) it sends the same requests to both and prints
aggregate tokens/s (all completion tokens over the wall time from the first request to the last token), p50
and p95 time to first token, per-request decode tokens/s, and the ratio batched / one at a time (goal: >= 2x
at 4 clients; one client alone >= 0.97x, best decode of LONE_ROUNDS alternating rounds); one more row at 4
clients with ``k_policy: adaptive``. Every batched text is checked equal to the one-at-a-time text.
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
from specfw.models.loading import load_model
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



# -- continuous batching ------------------------------------------------------------------------------------

BATCH_PROMPTS = ["The capital of France is", "Once upon a time, there was a little", "Water boils at a temperature of",
                 "The three primary colours are", "def fibonacci(n):", "The largest planet in the solar system is",
                 "In 1969, the first people to walk on the Moon", "A good recipe for pancakes needs"]
BATCH_TOKENS = 24
CONCURRENCY = [1, 2, 4, 8]
LONE_ROUNDS = 3
BATCH_GOAL, LONE_GOAL = 2.0, 0.97


@pytest.fixture(scope="module")
def batching_servers():
    one, batched = _Server("--max-batch", "1", "--no-prompt-cache"), _Server("--max-batch", "8", "--no-prompt-cache")
    yield one, batched
    one.stop()
    batched.stop()


def _timed_stream(server: _Server, prompt: str, extra: dict, start: float) -> dict:
    """One streaming completion; its chunk arrival times (from ``start``, the whole load's start)."""
    sent = time.perf_counter()
    times, text = [], []
    for chunk in server.client.completions.create(model="gemma3-270m", prompt=prompt, max_tokens=BATCH_TOKENS,
                                                  stream=True, stream_options={"include_usage": True},
                                                  extra_body=extra):
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        piece = chunk.choices[0].text if chunk.choices else ""
        if piece:
            times.append(time.perf_counter())
            text.append(piece)
    return {"text": "".join(text), "tokens": tokens, "ttft": times[0] - sent, "end": times[-1] - start,
            "tps": (tokens - 1) / (times[-1] - times[0]) if tokens > 1 and times[-1] > times[0] else 0.0}


def _load(server: _Server, clients: int, extra: dict | None = None) -> dict:
    """``clients`` concurrent streaming requests (prompt i for client i); aggregate and per-request figures."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: _timed_stream(server, BATCH_PROMPTS[i], extra or {}, start),
                                range(clients)))
    wall = max(r["end"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    tps = sorted(r["tps"] for r in results)
    return {"texts": [r["text"] for r in results], "tokens": sum(r["tokens"] for r in results), "wall": wall,
            "agg": sum(r["tokens"] for r in results) / wall, "ttft_p50": _pct(ttfts, 50), "ttft_p95": _pct(ttfts, 95),
            "tps_p50": _pct(tps, 50), "tps_p5": _pct(tps, 5)}


def _pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted ``values``."""
    import math

    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def test_batched_serving(benchmark, batching_servers):
    one, batched = batching_servers
    for server in (one, batched):  # warm-up: first passes, lazy imports
        _load(server, 1)
    rows = []
    for clients in CONCURRENCY:
        a, b = _load(one, clients), _load(batched, clients)
        assert a["texts"] == b["texts"], clients  # lossless through the batch
        rows.append(("default", clients, a, b))
    a, b = _load(one, 4, {"k_policy": "adaptive"}), _load(batched, 4, {"k_policy": "adaptive"})
    assert a["texts"] == b["texts"]
    rows.append(("k_policy adaptive", 4, a, b))
    # One client alone: alternating rounds, best decode each side (the same tokens: tok/s ratio = time ratio).
    lone = {"one": 0.0, "batched": 0.0}
    for _ in range(LONE_ROUNDS):
        for name, server in (("one", one), ("batched", batched)):
            lone[name] = max(lone[name], _timed_stream(server, BATCH_PROMPTS[0], {}, time.perf_counter())["tps"])
    lone_ratio = lone["batched"] / lone["one"]
    at4 = next(b["agg"] / a["agg"] for name, c, a, b in rows if name == "default" and c == 4)
    benchmark.extra_info.update({f"{n} x{c} ratio": round(b["agg"] / a["agg"], 3) for n, c, a, b in rows})
    benchmark.extra_info.update(lone_ratio=round(lone_ratio, 3), goal_4=BATCH_GOAL, goal_lone=LONE_GOAL)
    benchmark.group = "serve batching"
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\n{'settings':>18} {'clients':>7} | {'one-at-a-time tok/s':>19} {'ttft p50/p95 s':>15} {'req tok/s p50':>13} "
          f"| {'batched tok/s':>13} {'ttft p50/p95 s':>15} {'req tok/s p50':>13} | {'ratio':>5}")
    for name, clients, a, b in rows:
        print(f"{name:>18} {clients:7d} | {a['agg']:19.2f} {a['ttft_p50']:7.2f}/{a['ttft_p95']:<7.2f} "
              f"{a['tps_p50']:13.2f} | {b['agg']:13.2f} {b['ttft_p50']:7.2f}/{b['ttft_p95']:<7.2f} "
              f"{b['tps_p50']:13.2f} | {b['agg'] / a['agg']:5.2f}")
    print(f"one client alone, best of {LONE_ROUNDS}: one at a time {lone['one']:.2f} tok/s, batched server "
          f"{lone['batched']:.2f} tok/s, ratio {lone_ratio:.3f} (goal >= {LONE_GOAL})")
    print(f"4 clients: batched / one at a time = {at4:.2f} (goal >= {BATCH_GOAL})")
