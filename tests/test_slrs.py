"""``slrs``: the output is distributed as the target's alone; options, fallback and bad input.

The chi-square test (as in ``test_sampling.py``) compares the 2nd and 3rd
generated tokens of many seeded runs with the target alone. The drafter is a
real autoregressive drafter in another real vocabulary whose strings follow
the target's: *TextEchoDrafter* reads its context's text back into target ids,
runs the target model at a higher temperature, and moves each target token's
probability to the draft id that starts spelling it (the longest draft id
that is a prefix of the token's bytes), so a target token longer than that
id is spelled over several draft ids: exactly the tokenizations ψ sums. It
exposes what it drew from (``last_probs``) and the branch distributions. The
control computes ψ from a colder distribution than the one the drafter sampled
from; the same test must reject it.
"""

from __future__ import annotations

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest

from specfw.config import RunConfig
from specfw.errors import PluginError
from specfw.run import Run, prompt_ids
from specfw.text import complete_utf8_prefix
from specfw.tokenizers import single_byte_ids
from specfw_plugins.slrs import SLRSVerifier, _Cycle, tables_for
from specfw_plugins.slrs_strings import NO_TOKEN

from conftest import tiny_loaded
from test_sampling import _chi2_p

PROMPT = "Ala ma kota, a kot ma"
TEMP = 0.15
ECHO_TEMP = 0.225
RUNS = 400


class TextEchoDrafter:
    """Drafts draft ids whose text follows the target model's own (see the module docstring)."""

    name = "text-echo"
    needs_model = False

    def __init__(self, target, draft_tok, draft_prompt, seed):
        self.model, self.target_tok, self.draft_tok = target.model, target.tokenizer, draft_tok
        self.tables = tables_for([draft_tok.token_bytes(i) for i in range(draft_tok.vocab_size)],
                                 [target.tokenizer.token_bytes(i) for i in range(target.tokenizer.vocab_size)])
        self.draft_prompt = list(draft_prompt)
        self.target_prompt = prompt_ids(target.tokenizer, PROMPT)
        self.single_bytes = single_byte_ids(target.tokenizer)
        self.first_piece = _first_pieces(self.tables, draft_tok)
        self.rng = np.random.default_rng(seed)
        self.last_probs = None

    def reset(self):
        self.context = []

    def _target_ids(self, draft_ids):
        """The context's generated text as the target tokenizer encodes it (a partial character: byte pieces)."""
        text = b"".join(self.tables.draft_bytes[d] for d in draft_ids[len(self.draft_prompt):])
        complete = complete_utf8_prefix(text)
        ids = self.target_tok.encode_continuation(complete.decode("utf-8")) if complete else []
        return self.target_prompt + ids + [self.single_bytes[b] for b in text[len(complete):]]

    def _dist(self, draft_ids):
        logits = self.model(mx.array(self._target_ids(draft_ids))[None])[0, -1].astype(mx.float32)
        p = np.array(mx.softmax(logits / ECHO_TEMP, axis=-1), dtype=np.float64)[: len(self.first_piece)]
        q = np.bincount(self.first_piece, weights=p, minlength=self.draft_tok.vocab_size)
        return q / q.sum()

    def propose(self, pending, k, allowed=None):
        self.context.extend(pending)
        self.root = list(self.context)
        proposals, rows = [], []
        for _ in range(k):
            q = self._dist(self.context)
            x = int(self.rng.choice(len(q), p=q))
            proposals.append(x)
            rows.append(q)
            self.context.append(x)
        self.context.pop()
        self.last_probs = mx.array(np.stack(rows).astype(np.float32))
        return proposals

    def branch_probs(self, ids):
        return mx.array(np.stack([self._dist(self.root + [d]) for d in ids]).astype(np.float32))

    def trim(self, n):
        if n:
            del self.context[-n:]


_FIRST: dict = {}


def _first_pieces(tables, draft_tok):
    """For every target id: the longest draft id its bytes start with (specials: the draft's end id)."""
    key = id(tables)
    if key not in _FIRST:
        end = min(draft_tok.eos_ids)
        out = np.full(len(tables.target_bytes), end, np.int64)
        for t, piece in enumerate(tables.target_bytes):
            for cut in range(len(piece), 0, -1):
                ids = tables.draft_ids_spelling(piece[:cut])
                if ids:
                    out[t] = ids[-1]
                    break
        _FIRST[key] = out
    return _FIRST[key]


class ColderPsiCycle(_Cycle):
    """The control: ψ from a colder distribution than the one the drafter's ids were drawn from.

    Squaring the candidate distribution (and renormalising) is, for a one-id
    candidate, the drafter's softmax at half its temperature: the mistake of
    computing the ratio from a distribution other than what was sampled.
    """

    def next_candidate(self, width):
        candidate, r = super().next_candidate(width)
        if candidate is not None and r.sum() > 0:
            colder = r ** 2
            r = colder / colder.sum() * r.sum()
        return candidate, r


class ColderPsiVerifier(SLRSVerifier):
    cycle_class = ColderPsiCycle


def _runs(target, draft, seeds, verifier_cls=None, **options):
    out, proposed, accepted = [], 0, 0
    for seed in seeds:
        config = RunConfig(prompt=PROMPT, temp=TEMP, seed=seed, max_tokens=3, k=2, translator="context",
                           verifier="slrs", verifier_options=options)
        run = Run(config, target=target, draft=draft)
        side = run.draft_side
        side.drafter = TextEchoDrafter(target, draft.tokenizer, side.prompt_ids, seed)
        if verifier_cls is not None:
            run.target_side.verifier = verifier_cls(run.target_side.verifier.setup)
        result = run.result()
        out.append(tuple(result.token_ids))
        proposed += result.stats.proposed
        accepted += result.stats.accepted
    return out, proposed, accepted


@pytest.mark.slow
def test_slrs_output_is_distributed_as_the_target_alone():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    base = [tuple(Run(RunConfig(prompt=PROMPT, baseline=True, temp=TEMP, seed=s, max_tokens=3), target=target)
                  .result().token_ids) for s in range(RUNS)]
    spec, proposed, accepted = _runs(target, draft, range(10_000, 10_000 + RUNS), branches=8)
    wrong, _, _ = _runs(target, draft, range(20_000, 20_000 + RUNS), ColderPsiVerifier, branches=8)

    assert len(Counter(t[1] for t in base)) >= 2  # not degenerate
    assert 0.2 * proposed < accepted < 0.95 * proposed, (accepted, proposed)  # both paths are exercised
    for position in (1, 2):
        p_spec = _chi2_p([t[position] for t in base], [t[position] for t in spec])
        assert p_spec > 0.001, f"slrs differs from the target at token {position + 1} (p={p_spec:.2g})"
    assert _chi2_p([t[1:] for t in base], [t[1:] for t in spec]) > 0.001
    p_wrong = _chi2_p([t[1:] for t in base], [t[1:] for t in wrong])
    assert p_wrong < 1e-6, f"the test cannot tell a ψ from a colder distribution apart (p={p_wrong:.2g})"


def test_bad_options_are_one_clear_error():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    for options, words in (({"branchez": 3}, "no option 'branchez'"), ({"depth": 3}, "depth 1 or 2"),
                           ({"min_mass": "x"}, "must be integers")):
        with pytest.raises(PluginError, match=words):
            Run(RunConfig(prompt=PROMPT, temp=0.5, verifier="slrs", verifier_options=options), target=target, draft=draft)


def test_fallback_cycles_are_counted_and_decided_by_the_draft():
    """branches=0 with a tiny min_mass: every cycle whose first draft position has open mass falls back."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    config = RunConfig(prompt=PROMPT, temp=1.0, seed=3, max_tokens=8, k=2, verifier="slrs", translator="naive",
                       verifier_options={"branches": 0, "min_mass": 1e-9})
    stats = Run(config, target=target, draft=draft).result().stats
    drafted = stats.cycles - stats.k_counts.get(0, 0) - stats.zero_new_cycles
    assert 0 < stats.fallback_cycles <= drafted  # a cycle starting inside a character expands nothing
    config = config.model_copy(update={"verifier_options": {"depth": 1}})  # one draft id per candidate: no branches
    stats = Run(config, target=target, draft=draft).result().stats
    assert stats.fallback_cycles == 0 and stats.psi_s > 0


def test_candidate_is_the_longest_target_token_or_nothing():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    tab = tables_for([draft.tokenizer.token_bytes(i) for i in range(draft.tokenizer.vocab_size)],
                     [target.tokenizer.token_bytes(i) for i in range(target.tokenizer.vocab_size)])
    assert tab.longest(b"") == NO_TOKEN
    for text in ("żółw", " kot", "\u20ac", "ok."):
        raw = text.encode()
        piece = target.tokenizer.token_bytes(tab.longest(raw))
        assert piece and raw.startswith(piece)
        assert not any(target.tokenizer.token_bytes(i) == raw[:end] for end in range(len(piece) + 1, len(raw) + 1)
                       for i in [tab.token_of.get(raw[:end], -1)] if i >= 0)


def test_eval_sweeps_with_slrs_at_a_temperature(tmp_path, monkeypatch):
    """``specfw eval`` passes temp and verifier to every run; an unknown verifier fails before models load."""
    from specfw.study.eval import SweepConfig, read_records, run_sweep

    calls = []
    real_verify = SLRSVerifier.verify

    def counting_verify(self, *args, **kwargs):
        calls.append(kwargs.get("draft_strings") is not None)
        return real_verify(self, *args, **kwargs)

    monkeypatch.setattr(SLRSVerifier, "verify", counting_verify)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Zażółć gęślą jaźń"}\n{"prompt": "The capital of France is"}\n')
    fields = dict(datasets=[str(prompts)], translators=["context"], k=[2], max_tokens=6, temp=0.7,
                  target="tiny-random-mistral", drafts=["tiny-random-qwen2.5"])
    run_sweep(SweepConfig(**fields, verifier="slrs", out=tmp_path / "out"), progress=False)
    assert len(read_records(tmp_path / "out")) == 2 * 2
    assert calls and all(calls)
    with pytest.raises(PluginError, match="unknown verifier 'nope'"):
        run_sweep(SweepConfig(**fields, verifier="nope", out=tmp_path / "out2"), progress=False)


def test_a_drafter_temperature_sharpens_the_draws_and_what_the_verifier_is_handed():
    """``--drafter-option temp=T``: the mlx drafter draws at T and hands the verifier those distributions."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    peak = {}
    for drafter_temp in (1.0, 0.25):
        run = Run(RunConfig(prompt=PROMPT, temp=1.0, seed=5, max_tokens=12, k=2, verifier="slrs", translator="naive",
                            drafter_options={"temp": drafter_temp}), target=target, draft=draft)
        run.result()
        drafter = run.draft_side.drafter
        assert drafter.temp == drafter_temp
        assert drafter.last_probs is not None
        peak[drafter_temp] = float(mx.max(drafter.last_probs, axis=-1).mean())
    assert peak[0.25] > peak[1.0]  # the draws' distributions are sharper, and that is what slrs reads
    for bad in ("0", "-1", "warm"):
        with pytest.raises(PluginError, match="temp must be a number > 0"):
            Run(RunConfig(prompt=PROMPT, temp=1.0, verifier="slrs", drafter_options={"temp": bad}), target=target,
                draft=draft)


@pytest.mark.parametrize("run_temp, verifier, options, expected", [
    (1.0, "slrs", {}, 0.3),  # slrs names 0.3 (SLRSVerifier.draft_temp) ...
    (0.2, "slrs", {}, 0.2),  # ... never above the run's temperature
    (1.0, "slrs", {"temp": 0.8}, 0.8),  # an explicit drafter option wins
    (1.0, "speculative", {}, 1.0),  # a verifier that names none: the run's temperature
])
def test_the_drafters_default_temperature_comes_from_the_verifier(run_temp, verifier, options, expected):
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    translator = "tli" if verifier == "speculative" else "naive"
    run = Run(RunConfig(prompt=PROMPT, temp=run_temp, seed=1, max_tokens=4, k=2, verifier=verifier,
                        translator=translator, drafter_options=options), target=target, draft=draft)
    run.result()
    assert run.draft_side.drafter.temp == pytest.approx(expected)
    assert run.draft_side.drafter.sample
