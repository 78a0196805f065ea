"""specfw against Hugging Face transformers' Universal Assisted Generation (UAG), side by side on the default pair.

transformers runs in its own virtual environment, as a user would install it
(``scripts/setup_hf_uag.sh VENV``: torch's CPU build, transformers, accelerate,
tiktoken, sentencepiece), in a subprocess (``hf_uag_runner.py``) that loads the
same model folders specfw uses (float32 on the CPU); specfw runs in this
process. Same target prompt ids, greedy, 2 draft tokens per cycle (HF:
``num_assistant_tokens=2``, schedule ``constant``, its string-level
``AssistedCandidateGeneratorDifferentTokenizers``; specfw: ``--translator
context --k 2``), 48 new tokens, on prompts of several kinds: Polish and
English prose, lists, code (Python function headers), translation prompts and
whitespace-heavy text.

Run:  SPECFW_HF_PYTHON=/path/to/hf-venv/bin/python pytest benchmarks/test_vs_hf_uag.py -s
(``SPECFW_HF_UAG_PER_CLASS=1``: the first prompt of each class only.)

Per prompt it prints accepted draft ids per target pass and proposed ids per
target pass on both sides (every target forward that yields ids counts, the
prompt pass included on both sides; accepted counts the emitted ids that came
from the proposal), whether each side equals its own target alone (asserted:
both must be lossless) and whether the two targets' ids agree. Goal (issue
21): specfw >= HF on every prompt class. ``SPECFW_HF_UAG_VARIANTS`` adds
specfw columns with other ``context`` options, e.g. ``back_window=0`` (options
of one column comma-separated, columns separated by ``;``). No time is
asserted (HF's CPU path is not the point of this comparison).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import pytest

from peer_worker import PeerWorker

from specfw.config import RunConfig
from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw.run import Run, prompt_ids

K, TOKENS = 2, 48
RUNNER = Path(__file__).with_name("hf_uag_runner.py")

PROMPTS: list[tuple[str, str]] = [
    ("pl-prose", "Kraków jest jednym z najstarszych miast w Polsce. Przez kilka stuleci był stolicą kraju, a"),
    ("pl-prose", "Wisła jest najdłuższą rzeką Polski. Wypływa z Beskidu Śląskiego i"),
    ("en-prose", "The printing press changed Europe in the fifteenth century because"),
    ("en-prose", "Photosynthesis is the process by which green plants"),
    ("list", "Things to pack for a weekend hike:\n1. Water bottle\n2. Rain jacket\n3."),
    ("list", "Lista zakupów na weekend:\n- mleko\n- chleb\n- jajka\n-"),
    ("code", "def merge_sorted(left: list[int], right: list[int]) -> list[int]:\n"),
    ("code", "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"),
    ("translation", "Translate to Polish: The weather is beautiful today and we are going to the park.\nPolish:"),
    ("translation", "English: Where is the nearest train station?\nFrench: Où est la gare la plus proche ?\n"
                    "English: How much does this ticket cost?\nFrench:"),
    ("whitespace", "Name:        Alice\nAge:         30\nCity:        Paris\nCountry:"),
    ("whitespace", "server:\n  host: localhost\n  port: 8080\n  options:\n    debug: true\n    workers:"),
]


def _prompts() -> list[tuple[str, str]]:
    """All of :data:`PROMPTS`, or the first N of each class with ``SPECFW_HF_UAG_PER_CLASS=N`` (a shorter run)."""
    per_class = int(os.environ.get("SPECFW_HF_UAG_PER_CLASS", "0") or 0)
    if per_class <= 0:
        return list(PROMPTS)
    seen: dict[str, int] = {}
    chosen = []
    for kind, prompt in PROMPTS:
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] <= per_class:
            chosen.append((kind, prompt))
    return chosen


def _hf_python() -> str:
    python = os.environ.get("SPECFW_HF_PYTHON")
    if not python:
        pytest.skip("SPECFW_HF_PYTHON is not set: build HF's environment with scripts/setup_hf_uag.sh VENV "
                    "and set SPECFW_HF_PYTHON=VENV/bin/python")
    if not Path(python).is_file():
        pytest.skip(f"SPECFW_HF_PYTHON={python} does not exist: build it with scripts/setup_hf_uag.sh")
    check = subprocess.run(
        [python, "-c", "from transformers.generation.candidate_generator import "
         "AssistedCandidateGeneratorDifferentTokenizers"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"{python} has no transformers with assisted generation across tokenizers")
    return python


def _variants() -> list[tuple[str, dict]]:
    out = [("specfw", {})]
    for spec in filter(None, (part.strip() for part in os.environ.get("SPECFW_HF_UAG_VARIANTS", "").split(";"))):
        out.append((spec, dict(item.split("=", 1) for item in spec.split(","))))
    return out


@pytest.fixture(scope="module")
def pair():
    return load_model(DEFAULT_TARGET), load_model(DEFAULT_DRAFT)


class _HF(PeerWorker):
    """transformers' worker process (``hf_uag_runner.py``), models loaded once."""

    def __init__(self, python: str, pair) -> None:
        target, draft = pair
        super().__init__(python, RUNNER, "the HF runner")
        ready = self.ask({"target": str(target.path), "draft": str(draft.path), "k": K})
        self.versions = f"torch {ready['torch']}, transformers {ready['transformers']}"

    def run(self, ids: list[int]) -> dict:
        return self.ask({"prompt": ids, "max_tokens": TOKENS})


def _run_specfw(pair, prompt: str, options: dict | None = None, baseline: bool = False) -> dict:
    target, draft = pair
    config = RunConfig(prompt=prompt, translator="context", k=K, max_tokens=TOKENS, baseline=baseline,
                       translator_options=dict(options or {}))
    run = Run(config, target=target, draft=draft)
    result = run.result()
    stats = result.stats
    # Target passes that yielded ids: ``cycles`` counts the prompt pass when it verified a proposal.
    passes = stats.cycles + (0 if stats.prompt_pass_drafted else 1)
    modes = {} if baseline else dict(getattr(run.draft_side.translator, "mode_counts", {}) or {})
    return {"token_ids": result.token_ids, "accepted": sum(result.from_draft), "proposed": stats.proposed,
            "passes": passes, "modes": modes}


def test_vs_hf_uag(benchmark, pair):
    python = _hf_python()
    variants = _variants()
    worker = _HF(python, pair)
    rows = []
    try:
        prompts = _prompts()
        for kind, prompt in prompts:
            ids = prompt_ids(pair[0].tokenizer, prompt)
            alone = _run_specfw(pair, prompt, baseline=True)["token_ids"]
            hf = worker.run(ids)
            ours = {name: _run_specfw(pair, prompt, options) for name, options in variants}
            rows.append((kind, prompt, alone, hf, ours))
            print(f"[{len(rows)}/{len(prompts)}] {kind} {prompt[:30]!r}: HF accepted/proposed/passes "
                  f"{hf['accepted']}/{hf['proposed']}/{hf['passes']} lossless {hf['token_ids'] == hf['alone_ids']}; "
                  + "; ".join(f"{n} {o['accepted']}/{o['proposed']}/{o['passes']} lossless {o['token_ids'] == alone}"
                              for n, o in ours.items())
                  + f"; same target {hf['alone_ids'] == alone}", file=sys.stderr, flush=True)
    finally:
        worker.close()

    names = [name for name, _ in variants]
    head = f"{'class':<12} {'prompt':<30} {'acc/pass HF':>11} " + " ".join(f"{n[:14]:>14}" for n in names)
    head += f" {'prop/pass HF':>12} " + " ".join(f"{n[:14]:>14}" for n in names) + "  lossless  same-target"
    lines = [head]
    per_class: dict[str, list] = {}
    for i, (kind, prompt, alone, hf, ours) in enumerate(rows):
        assert hf["token_ids"] == hf["alone_ids"], f"HF's assisted output differs from its target alone on {prompt!r}"
        for name in names:
            assert ours[name]["token_ids"] == alone, f"specfw ({name}) differs from the target alone on {prompt!r}"
        apc = {"hf": hf["accepted"] / hf["passes"], **{n: ours[n]["accepted"] / ours[n]["passes"] for n in names}}
        ppc = {"hf": hf["proposed"] / hf["passes"], **{n: ours[n]["proposed"] / ours[n]["passes"] for n in names}}
        same = "yes" if hf["alone_ids"] == alone else "no"
        label = prompt.replace("\n", "\\n")[:30]
        lines.append(f"{kind:<12} {label:<30} {apc['hf']:>11.3f} " + " ".join(f"{apc[n]:>14.3f}" for n in names)
                     + f" {ppc['hf']:>12.3f} " + " ".join(f"{ppc[n]:>14.3f}" for n in names) + f"  both      {same}")
        sums = per_class.setdefault(kind, [0, 0] + [0, 0] * len(names))
        sums[0] += hf["accepted"]
        sums[1] += hf["passes"]
        for j, n in enumerate(names):
            sums[2 + 2 * j] += ours[n]["accepted"]
            sums[3 + 2 * j] += ours[n]["passes"]
        benchmark.extra_info[f"prompt{i}"] = {
            "class": kind, "prompt": prompt, "hf": {k: hf[k] for k in ("accepted", "proposed", "passes")},
            **{n: {k: ours[n][k] for k in ("accepted", "proposed", "passes", "modes")} for n in names},
            "same_target": same == "yes"}
    lines.append("per class, accepted / passes pooled:")
    ahead = 0
    for kind, sums in per_class.items():
        hf_apc = sums[0] / sums[1]
        ours_apc = [sums[2 + 2 * j] / sums[3 + 2 * j] for j in range(len(names))]
        ahead += ours_apc[0] >= hf_apc
        lines.append(f"  {kind:<12} HF {hf_apc:.3f}  " + "  ".join(f"{n} {a:.3f}" for n, a in zip(names, ours_apc)))
    hf_total = sum(s[0] for s in per_class.values()) / sum(s[1] for s in per_class.values())
    ours_total = sum(s[2] for s in per_class.values()) / sum(s[3] for s in per_class.values())
    lines.append(f"all prompts: HF {hf_total:.3f}, specfw {ours_total:.3f} ({ours_total / hf_total:.2f}x); "
                 f"specfw >= HF on {ahead}/{len(per_class)} classes (goal: all)")
    lines.append(f"HF side: {worker.versions}, float32 CPU, greedy, num_assistant_tokens={K} (constant)")
    benchmark.extra_info.update(hf_apc=hf_total, specfw_apc=ours_total)
    benchmark.group = "vs HF UAG"
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n" + "\n".join(lines), file=sys.stderr)
