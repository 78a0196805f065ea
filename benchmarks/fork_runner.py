"""Run the reference paper's mlx-lm fork (context-aware SLEM) in its own environment; used by test_vs_paper_fork.py.

Runs under the fork's Python (``SPECFW_FORK_PYTHON``), not specfw's: it
imports only the fork's ``mlx_lm``. It is a worker, so the benchmark can
alternate the fork and specfw prompt by prompt while models stay loaded.
The first line on stdin sets it up::

    {"target": PATH, "draft": PATH, "k": 2, "window": 8}

it loads both models, runs one short warm-up generation and answers
``{"ready": true, "blas": ...}`` (``blas``: the BLAS libraries this process
mapped, where an ``LD_PRELOAD``-ed OpenBLAS shows). Each later line,
``{"prompt": [target ids], "max_tokens": 48}``, is answered with one line:
``token_ids``, ``from_draft``, ``accepted`` (ids the fork marks as drafted),
``cycles`` (target verification passes: one per non-drafted id, plus one
when the last cycle was cut by ``max_tokens`` before its own id),
``first_s`` (call to first id) and ``decode_s`` (first id to last id).

The fork is called through its public API, ``mlx_lm.stream_generate(model,
tokenizer, prompt, draft_model=..., draft_tokenizer=..., num_draft_tokens=k,
translation_prefix_tokens=window)``, greedy (its default sampler), since its
command line has no option for the window.
"""

from __future__ import annotations

import json
import sys
import time


def _mapped_blas() -> str:
    """The BLAS/LAPACK libraries mapped into this process."""
    names = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "blas" in path or "mkl" in path:
                names.add(path)
    return ", ".join(sorted(names))


def _generate(model, tokenizer, prompt: list[int], max_tokens: int, options: dict) -> dict:
    import mlx.core as mx
    from mlx_lm import stream_generate

    ids, from_draft, times = [], [], []
    start = time.perf_counter()
    for response in stream_generate(model, tokenizer, mx.array(prompt), max_tokens=max_tokens, **options):
        if response.finish_reason == "stop":
            break  # the stop id itself, which specfw does not emit either
        times.append(time.perf_counter())
        ids.append(int(response.token))
        from_draft.append(bool(response.from_draft))
    accepted = sum(from_draft)
    return {
        "token_ids": ids,
        "from_draft": from_draft,
        "accepted": accepted,
        "cycles": len(ids) - accepted + (1 if from_draft and from_draft[-1] else 0),
        "first_s": times[0] - start if times else 0.0,
        "decode_s": times[-1] - times[0] if times else 0.0,
    }


def main() -> None:
    from mlx_lm import load

    setup = json.loads(sys.stdin.readline())
    model, tokenizer = load(setup["target"])
    draft_model, draft_tokenizer = load(setup["draft"])
    options = dict(
        draft_model=draft_model,
        draft_tokenizer=draft_tokenizer,
        num_draft_tokens=setup.get("k", 2),
        translation_prefix_tokens=setup.get("window", 8),
    )
    _generate(model, tokenizer, tokenizer.encode("Warm-up"), 8, options)
    print(json.dumps({"ready": True, "blas": _mapped_blas()}), flush=True)
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            result = _generate(model, tokenizer, request["prompt"], request.get("max_tokens", 48), options)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
