"""Lossless ``tli``: greedy output equals the target alone; sampled output is distributed as the target's.

Greedy: hypothesis prompts (the fragments of ``test_lossless.py``) on the real
tokenizer pairs, every cache-sync and k in 1..4, with the ``mlx`` drafter
(restricted argmax of a random model: mostly rejections) and the ``replay``
drafter fed the target's own continuation mapped into the draft vocabulary
(mostly acceptances). A separate test checks that this acceptance really
happens.

Sampling (the ``speculative`` verifier, chosen by default for ``tli`` at
temp > 0): a two-sample chi-square test of the 2nd and 3rd generated tokens
(the first ones a drafter can propose) against the target alone over many
seeds, with

* an *echo* drafter: it drafts from the target model itself at a higher
  temperature, seen through the draft vocabulary, so its q overlaps the
  target's p and both the accept and the residual paths are exercised; the
  control, the same drafter proposing its argmax while reporting its softmax
  as q (the classic mistake: q is not what the proposals were drawn from),
  must be rejected by the same test, so the test is known to have power;
* the real ``mlx`` drafter (a tiny random Qwen model sampling from its
  restricted distribution), with top-p on both sides.
"""

from __future__ import annotations

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, strategies as st

from specfw.config import RunConfig
from specfw.run import Run, draft_prompt_ids, prompt_ids
from specfw.text import complete_text
from specfw_plugins.tli import intersection
from specfw_plugins.verifiers import SpeculativeVerifier

from conftest import tiny_loaded

from test_lossless import CACHE_SYNCS, KS, PAIRS, PROMPTS
from test_sampling import _chi2_p


def _baseline(target, prompt: str, max_tokens: int, **sampling):
    return Run(RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens, **sampling), target=target).result()


def _tli_reference(target, draft, prompt: str, target_ids) -> list[int]:
    """The target's continuation in draft ids as ``tli`` maps it back: what a perfect restricted drafter proposes."""
    from specfw.protocols import TranslatorSetup
    from specfw_plugins.tli import TLITranslator

    tli = TLITranslator(TranslatorSetup(draft.tokenizer, target.tokenizer, RunConfig(prompt=prompt)))
    reference = draft_prompt_ids(draft.tokenizer, target.tokenizer, prompt)
    for i in range(len(target_ids)):  # the longest prefix that maps back cleanly
        mapped = tli.target_ids_to_draft(target_ids[: len(target_ids) - i])
        if mapped is not None:
            return reference + mapped
    return reference


# --------------------------------------------------------------------------- greedy


@pytest.mark.slow
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("cache_sync", CACHE_SYNCS)
@given(prompt=PROMPTS, pair=st.sampled_from(PAIRS), max_tokens=st.integers(4, 16))
def test_greedy_tli_equals_target_alone(cache_sync, k, prompt, pair, max_tokens):
    target, draft = tiny_loaded(pair[0]), tiny_loaded(pair[1])
    baseline = _baseline(target, prompt, max_tokens)
    common = dict(prompt=prompt, translator="tli", cache_sync=cache_sync, k=k, max_tokens=max_tokens)

    spec = Run(RunConfig(**common), target=target, draft=draft).result()
    assert spec.translator_used == "tli" and spec.config.verifier_name == "greedy"
    assert spec.token_ids == baseline.token_ids
    assert spec.stats.accepted <= spec.stats.proposed

    reference = _tli_reference(target, draft, prompt, baseline.token_ids)
    replay = Run(
        RunConfig(**common, drafter="replay", drafter_options={"reference": reference}), target=target, draft=draft
    ).result()
    assert replay.token_ids == baseline.token_ids


@pytest.mark.parametrize("pair", [("mistral", "qwen"), ("mistral", "llama3")])
def test_replay_of_the_target_is_accepted_through_tli(pair):
    """The target's own continuation, proposed in the draft vocabulary, is mostly accepted: ids map one for one.

    Not for the Qwen target: its tiny random model repeats b" miejs" here, a
    token Mistral lacks, which TLI can never propose (the greedy test above
    still covers that pair).
    """
    target, draft = tiny_loaded(pair[0]), tiny_loaded(pair[1])
    prompt = "Zażółć gęślą jaźń w Warszawie, a potem"
    baseline = _baseline(target, prompt, 24)
    reference = _tli_reference(target, draft, prompt, baseline.token_ids)
    config = RunConfig(prompt=prompt, translator="tli", k=3, max_tokens=24, drafter="replay",
                       drafter_options={"reference": reference})
    result = Run(config, target=target, draft=draft).result()
    assert result.token_ids == baseline.token_ids
    assert result.stats.proposed > 0
    assert result.stats.acceptance_rate > 0.5, result.stats.as_dict()


# --------------------------------------------------------------------------- sampling

PROMPT = "Ala ma kota, a kot ma"
# At 0.15 the tiny target spreads its 2nd-token mass (top ≈ 35%); the echo drafter's flatter q is then
# accepted about half the time, and the argmax control is far off (computed from the model's logits).
TEMP = 0.15
ECHO_TEMP = 0.225
RUNS = 500


_INDEX: dict = {}


def _index_arrays(inter):
    """(target ids, draft ids) of the intersection's target→draft map, as numpy arrays, built once."""
    if id(inter) not in _INDEX:
        t_ids, d_ids = zip(*inter.target_to_draft.items())
        _INDEX[id(inter)] = (np.array(t_ids), np.array(d_ids))
    return _INDEX[id(inter)]


class EchoDrafter:
    """Drafts from the *target* model at ``ECHO_TEMP``, restricted to the intersection, in draft ids.

    A real drafter (not a mock): it keeps its context in draft ids, maps it to
    target ids through the intersection (prompt ids as the target sees them),
    runs the target model, moves the distribution into the draft vocabulary
    through the intersection and samples from it, exposing ``last_probs``.
    """

    name = "echo"
    needs_model = False

    def __init__(self, target, draft_tok, target_prompt, draft_prompt, seed, argmax=False):
        self.argmax = argmax  # the control: propose the argmax of q, still report q
        self.model = target.model
        self.target_tok, self.draft_tok = target.tokenizer, draft_tok
        self.inter = intersection(draft_tok, target.tokenizer)
        self.target_prompt, self.draft_prompt = list(target_prompt), list(draft_prompt)
        self.draft_vocab = draft_tok.vocab_size
        self.t_ids, self.d_ids = _index_arrays(self.inter)
        self.rng = np.random.default_rng(seed)
        self.last_probs = None

    def reset(self):
        self.context = []

    def _target_view(self):
        generated = self.context[len(self.draft_prompt):]
        if all(i in self.inter.draft_to_target for i in generated):
            return self.target_prompt + [self.inter.draft_to_target[i] for i in generated]
        # text the translator re-encoded (a target token outside the intersection): read it as text
        return self.target_prompt + self.target_tok.encode_continuation(complete_text(self.draft_tok.decode_bytes(generated)))

    def propose(self, pending, k, allowed=None):
        self.context.extend(pending)
        proposals, rows = [], []
        for _ in range(k):
            logits = self.model(mx.array(self._target_view())[None])[0, -1].astype(mx.float32)
            p = np.array(mx.softmax(logits / ECHO_TEMP, axis=-1))
            q = np.zeros(self.draft_vocab, dtype=np.float64)
            np.add.at(q, self.d_ids, p[self.t_ids])
            q /= q.sum()
            x = int(np.argmax(q)) if self.argmax else int(self.rng.choice(self.draft_vocab, p=q))
            proposals.append(x)
            rows.append(q.astype(np.float32))
            self.context.append(x)
        self.context.pop()  # the last proposal is not cached
        self.last_probs = mx.array(np.stack(rows))
        return proposals

    def trim(self, n):
        if n:
            del self.context[-n:]


def _echo_tokens(target, draft, seed, argmax=False):
    config = RunConfig(prompt=PROMPT, translator="tli", temp=TEMP, seed=seed, max_tokens=3, k=2)
    run = Run(config, target=target, draft=draft)
    assert run.draft_side.draft_probs and isinstance(run.target_side.verifier, SpeculativeVerifier)
    side = run.draft_side
    side.drafter = EchoDrafter(target, draft.tokenizer, run.target_side.prompt_ids, side.prompt_ids, seed, argmax)
    result = run.result()
    return tuple(result.token_ids), result.stats


@pytest.mark.slow
def test_speculative_sampling_with_tli_matches_target_alone():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    assert RunConfig(prompt=PROMPT, translator="tli", temp=TEMP).verifier_name == "speculative"
    base = [tuple(_baseline(target, PROMPT, 3, temp=TEMP, seed=seed).token_ids) for seed in range(RUNS)]
    spec_runs = [_echo_tokens(target, draft, 10_000 + seed) for seed in range(RUNS)]
    spec = [tokens for tokens, _ in spec_runs]
    wrong = [_echo_tokens(target, draft, 20_000 + seed, argmax=True)[0] for seed in range(RUNS)]

    assert len(Counter(t[1] for t in base)) >= 2  # not degenerate
    # The drafter's proposals are really accepted, and really rejected: both paths are exercised.
    proposed = sum(s.proposed for _, s in spec_runs)
    accepted = sum(s.accepted for _, s in spec_runs)
    assert 0.2 * proposed < accepted < 0.95 * proposed, (accepted, proposed)
    for position in (1, 2):
        p_spec = _chi2_p([t[position] for t in base], [t[position] for t in spec])
        assert p_spec > 0.001, f"tli speculative sampling differs from the target at token {position + 1} (p={p_spec:.2g})"
    assert _chi2_p([t[1:] for t in base], [t[1:] for t in spec]) > 0.001
    # The control: proposals that were not drawn from the q handed over are detected by the same test.
    p_wrong = _chi2_p([t[1:] for t in base], [t[1:] for t in wrong])
    assert p_wrong < 1e-6, f"the test cannot tell an argmax drafter reporting q apart (p={p_wrong:.2g})"


@pytest.mark.slow
def test_sampling_mlx_drafter_through_tli_matches_target_alone():
    """The real path: the mlx drafter samples from its restricted, top-p-cut distribution and hands q over."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    sampling = dict(temp=TEMP, top_p=0.9)
    base = [tuple(_baseline(target, PROMPT, 3, seed=seed, **sampling).token_ids) for seed in range(RUNS)]
    spec = []
    for seed in range(RUNS):
        config = RunConfig(prompt=PROMPT, translator="tli", seed=10_000 + seed, max_tokens=3, k=2, **sampling)
        spec.append(tuple(Run(config, target=target, draft=draft).result().token_ids))
    assert len(Counter(t[1] for t in base)) >= 2
    for position in (1, 2):
        assert _chi2_p([t[position] for t in base], [t[position] for t in spec]) > 0.001
    assert _chi2_p([t[1:] for t in base], [t[1:] for t in spec]) > 0.001
