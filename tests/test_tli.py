"""The ``tli`` translator and the ``speculative`` verifier, piece by piece, on real tokenizers.

* the intersection: sentencepiece "▁" and byte-level "Ġ" meet, byte-fallback
  tokens meet single bytes, specials never enter, duplicates map to the id the
  tokenizer itself uses;
* the mapping both ways, the allowed mask and the probability scatter;
* the rejection rule: one step's output is distributed as the target's ``p``
  (chi-square against the exact ``p``), and the same test rejects a rule that
  is wrong on purpose;
* corpus coverage on real Polish text, against a direct count.

Losslessness of whole runs is in ``test_tli_lossless.py``.
"""

from __future__ import annotations

import json
import mlx.core as mx
import numpy as np
import pytest
from scipy.stats import binomtest, chisquare

from specfw.config import RunConfig
from specfw.study.datasets import load_dataset
from specfw.protocols import Acceptance, Proposal, TranslatorSetup, VerifierSetup
from specfw.tokenizers import load_tokenizer
from specfw_plugins.tli import TLITranslator, corpus_coverage, intersection, main as tli_main
from specfw_plugins.verifiers import SpeculativeVerifier


@pytest.fixture(scope="module")
def mistral():
    return load_tokenizer("mistral-v0.1")


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer("qwen2.5")


@pytest.fixture(scope="module")
def llama3():
    return load_tokenizer("llama3")


def _translator(draft, target, **config):
    return TLITranslator(TranslatorSetup(draft, target, RunConfig(prompt="x", translator="tli", **config)))


# --------------------------------------------------------------------------- the intersection


def test_space_markers_meet(mistral, qwen):
    """Mistral's '▁ja' (sentencepiece) and Qwen's 'Ġja' (byte-level) are the same token: b' ja'."""
    (m_id,) = mistral.encode_continuation(" ja")
    (q_id,) = qwen.encode(" ja")
    inter = intersection(qwen, mistral)
    assert mistral.token_bytes(m_id) == qwen.token_bytes(q_id) == b" ja"
    assert inter.draft_to_target[q_id] == m_id
    assert inter.target_to_draft[m_id] == q_id


def test_every_pair_has_equal_bytes_and_no_specials(mistral, qwen, llama3):
    for draft, target in [(qwen, mistral), (llama3, mistral), (mistral, qwen)]:
        inter = intersection(draft, target)
        assert inter.draft_to_target and inter.target_to_draft
        for did, tid in inter.draft_to_target.items():
            assert draft.token_bytes(did) == target.token_bytes(tid) != b""
            assert not draft.is_special(did) and not target.is_special(tid)
        for tid, did in inter.target_to_draft.items():
            assert draft.token_bytes(did) == target.token_bytes(tid)
        # Nothing is missed: a brute-force intersection of the byte sets gives the same shared count.
        draft_set = {draft.token_bytes(i) for i in range(draft.vocab_size) if not draft.is_special(i)} - {b""}
        target_set = {target.token_bytes(i) for i in range(target.vocab_size) if not target.is_special(i)} - {b""}
        assert inter.shared == len(draft_set & target_set)
        assert len(inter.target_to_draft) == sum(
            1 for i in range(target.vocab_size) if not target.is_special(i) and target.token_bytes(i) in draft_set
        )


def test_specials_are_excluded(mistral, qwen):
    inter = intersection(qwen, mistral)
    for tid in (mistral.bos_id, *mistral.eos_ids):
        assert tid not in inter.target_to_draft
    for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert qwen.special_ids[name] not in inter.draft_to_target


def test_byte_fallback_tokens_meet_single_bytes(mistral, qwen):
    """Mistral's <0xC5> byte token is the single byte 0xC5, which Qwen's byte-level vocabulary holds."""
    byte_c5 = mistral._sp.piece_to_id("<0xC5>")
    assert mistral.token_bytes(byte_c5) == b"\xc5"
    did = intersection(qwen, mistral).target_to_draft[byte_c5]
    assert qwen.token_bytes(did) == b"\xc5"
    # Every one of the 256 bytes is shared: byte fallback keeps any text representable.
    assert all(bytes([b]) in {mistral.token_bytes(t) for t in intersection(qwen, mistral).target_to_draft} for b in range(256))


def test_duplicates_map_to_the_tokenizers_own_id(mistral, qwen):
    """Mistral spells 'a' twice ('a' and <0x61>); a draft 'a' maps to the id Mistral itself produces."""
    own = mistral.encode_continuation("a")
    assert len(own) == 1 and own[0] != mistral._sp.piece_to_id("<0x61>")
    assert intersection(qwen, mistral).draft_to_target[qwen.encode("a")[0]] == own[0]
    # The other way: both Mistral 'a' ids map to Qwen's 'a'; Qwen 'a' maps back to Mistral's own.
    inter = intersection(mistral, qwen)
    assert inter.draft_to_target[mistral._sp.piece_to_id("<0x61>")] == inter.draft_to_target[own[0]] == qwen.encode("a")[0]
    assert inter.target_to_draft[qwen.encode("a")[0]] == own[0]


def test_intersection_is_cached_per_vocabulary_pair(mistral, qwen):
    first = intersection(qwen, mistral)
    assert intersection(load_tokenizer("qwen2.5"), load_tokenizer("mistral-v0.1")) is first
    assert intersection(mistral, qwen) is not first


# --------------------------------------------------------------------------- translation


def test_to_target_maps_ids_directly_and_cuts_at_an_unshared_id(mistral, qwen):
    tli = _translator(qwen, mistral)
    # Qwen's own " kota" is one token Mistral lacks; spelled with shared tokens, as Mistral splits it:
    ids = [tli.target_to_draft[i] for i in mistral.encode_continuation(" Ala ma kota")]
    mapped = tli.to_target(Proposal(ids, b"", []))
    assert mapped == [tli.draft_to_target[i] for i in ids]
    assert b"".join(map(mistral.token_bytes, mapped)) == b" Ala ma kota"
    unshared = next(i for i in range(qwen.vocab_size) if i not in tli.draft_to_target and not qwen.is_special(i))
    assert tli.to_target(Proposal([ids[0], unshared, ids[1]], b"", [])) == mapped[:1]


def test_to_draft_maps_shared_ids_directly(mistral, qwen):
    tli = _translator(qwen, mistral)
    draft_ids = [tli.target_to_draft[i] for i in mistral.encode_continuation(" Ala ma kota")]
    target_ids = tli.to_target(Proposal(draft_ids, b"", []))
    keep, append = tli.to_draft(Acceptance(target_ids, " Ala ma kota", [1, 2, 3]))
    assert (keep, append) == (3, draft_ids)  # the drafter's own ids come back: its cache is kept


def test_to_draft_reencodes_unshared_runs_as_text(mistral, qwen):
    tli = _translator(qwen, mistral)
    # Mistral's '▁giv' has no Qwen token with the same bytes.
    (giv,) = [i for i in mistral.encode_continuation(" giv") if mistral.token_bytes(i) == b" giv"]
    assert giv not in tli.target_to_draft
    head = mistral.encode_continuation(" Ala")
    ids = head + [giv] + mistral.encode_continuation("en")
    text = mistral.decode(ids)
    keep, append = tli.to_draft(Acceptance(ids, text, []))
    assert keep == 0
    assert append[: len(head)] == [tli.target_to_draft[i] for i in head]
    assert qwen.decode(append) == text


def test_to_draft_falls_back_to_text_around_a_held_back_character(mistral, qwen):
    """The scheduler holds back a partial UTF-8 character; the drafter then gets exactly the complete text."""
    tli = _translator(qwen, mistral)
    lead, cont = mistral._sp.piece_to_id("<0xF0>"), mistral._sp.piece_to_id("<0x9F>")
    ids = mistral.encode_continuation(" ok") + [lead, cont]  # ends inside an emoji: held back
    keep, append = tli.to_draft(Acceptance(ids, " ok", [5]))
    assert keep == 1 and append == qwen.encode(" ok")
    rest = [mistral._sp.piece_to_id("<0x98>"), mistral._sp.piece_to_id("<0x80>")] + mistral.encode_continuation(" dalej")
    keep, append = tli.to_draft(Acceptance(rest, "😀 dalej", [5, 6]))
    assert keep == 2 and qwen.decode(append) == "😀 dalej"


def test_allowed_mask_covers_exactly_the_shared_draft_ids(mistral, qwen):
    tli = _translator(qwen, mistral)
    mask = tli.allowed_mask(qwen.vocab_size + 37)  # a model head padded past the tokenizer
    assert mask.shape == (qwen.vocab_size + 37,) and mask.dtype == mx.bool_
    flags = np.array(mask)
    assert flags.sum() == len(tli.draft_to_target)
    assert not flags[qwen.vocab_size :].any()
    assert sorted(np.flatnonzero(flags).tolist()) == sorted(tli.draft_to_target)
    assert tli.allowed_mask(qwen.vocab_size + 37) is mask  # cached


def test_to_target_probs_scatters_through_the_intersection(mistral, qwen):
    tli = _translator(mistral, qwen)  # Mistral drafting for Qwen: two Mistral ids ('a', <0x61>) → one Qwen id
    a_piece, a_byte = mistral.encode_continuation("a")[0], mistral._sp.piece_to_id("<0x61>")
    (ja,) = mistral.encode_continuation(" ja")
    probs = np.zeros((2, mistral.vocab_size), dtype=np.float32)
    probs[0, [a_piece, a_byte, ja]] = [0.25, 0.25, 0.5]
    probs[1, ja] = 1.0
    out = np.array(tli.to_target_probs(mx.array(probs)))
    assert out.shape == (2, qwen.vocab_size)
    assert out[0, qwen.encode("a")[0]] == pytest.approx(0.5)
    assert out[0, qwen.encode(" ja")[0]] == pytest.approx(0.5)
    assert out[1, qwen.encode(" ja")[0]] == pytest.approx(1.0)
    assert out.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_to_target_probs_accepts_any_draft_width(mistral, qwen):
    """A draft head wider than the tokenizer (padded rows) or narrower: only the ids it has are mapped."""
    tli = _translator(qwen, mistral)
    shared = qwen.encode(" ja")[0]
    for width in (qwen.vocab_size + 300, shared + 1):
        probs = np.zeros((1, width), dtype=np.float32)
        probs[0, shared] = 1.0
        out = np.array(tli.to_target_probs(mx.array(probs)))
        assert out.shape == (1, mistral.vocab_size)
        assert out[0, tli.draft_to_target[shared]] == pytest.approx(1.0)


def test_to_target_probs_renormalizes_mass_outside_the_intersection(mistral, qwen):
    """An unrestricted drafter's row, given its proposal was kept (shared), is the row restricted and renormalized."""
    tli = _translator(qwen, mistral)
    unshared = next(i for i in range(qwen.vocab_size) if i not in tli.draft_to_target and not qwen.is_special(i))
    shared = qwen.encode(" ja")[0]
    probs = np.zeros((1, qwen.vocab_size), dtype=np.float32)
    probs[0, [unshared, shared]] = [0.75, 0.25]
    out = np.array(tli.to_target_probs(mx.array(probs)))
    assert out[0, tli.draft_to_target[shared]] == pytest.approx(1.0)


# --------------------------------------------------------------------------- the rejection rule


P = np.array([[0.40, 0.25, 0.15, 0.10, 0.06, 0.04], [0.05, 0.05, 0.10, 0.20, 0.30, 0.30]])
Q = np.array([[0.10, 0.30, 0.30, 0.05, 0.05, 0.20], [0.30, 0.30, 0.10, 0.10, 0.10, 0.10]])
DRAWS = 4000


def _verifier(seed: int = 0):
    return SpeculativeVerifier(VerifierSetup(RunConfig(prompt="x", temp=1.0, seed=seed, translator="tli")))


def _one_step(verifier, q_given, rng, n=1):
    """One verification of ``n`` proposals drawn from Q (the true draft distribution), ``q_given`` told to the verifier.

    The target's logits are log P plus a bonus row; returns (accepted, emitted ids).
    """
    logits = mx.array(np.log(np.vstack([P[:n], np.full((1, 6), 1 / 6)])).astype(np.float32))
    proposed = [int(rng.choice(6, p=Q[i])) for i in range(n)]
    logq = None if q_given is None else mx.array(np.log(q_given[:n]).astype(np.float32))
    accepted, next_id = verifier.verify(logits, proposed, logq)
    return accepted, proposed[:accepted] + [next_id]


def _fits(samples, probs) -> float:
    counts = np.bincount(samples, minlength=len(probs))
    return chisquare(counts, probs * len(samples)).pvalue


def test_rejection_rule_output_is_distributed_as_p():
    verifier, rng = _verifier(), np.random.default_rng(0)
    steps = [_one_step(verifier, Q, rng) for _ in range(DRAWS)]
    assert _fits([emitted[0] for _, emitted in steps], P[0]) > 1e-3
    # Acceptance happens at the rate the rule promises: sum(min(p, q)).
    accepted = sum(a for a, _ in steps)
    assert binomtest(accepted, DRAWS, np.minimum(P[0], Q[0]).sum()).pvalue > 1e-3


def test_rejection_rule_over_two_positions():
    """With two proposals, the first emitted id follows p_1 and, when x_1 is accepted, the second follows p_2."""
    verifier, rng = _verifier(1), np.random.default_rng(1)
    steps = [_one_step(verifier, Q, rng, n=2) for _ in range(DRAWS)]
    assert _fits([emitted[0] for _, emitted in steps], P[0]) > 1e-3
    seconds = [emitted[1] for a, emitted in steps if a >= 1]
    assert len(seconds) > 500
    assert _fits(seconds, P[1]) > 1e-3


def test_without_draft_probabilities_proposals_count_as_certain():
    """No q (a greedy or scripted drafter): accepted with probability p(x), output still distributed as p."""
    verifier, rng = _verifier(2), np.random.default_rng(2)
    steps = [_one_step(verifier, None, rng) for _ in range(DRAWS)]
    assert _fits([emitted[0] for _, emitted in steps], P[0]) > 1e-3
    expected = float((Q[0] * P[0]).sum())
    assert binomtest(sum(a for a, _ in steps), DRAWS, expected).pvalue > 1e-3


def test_the_chi_square_check_rejects_a_wrong_q():
    """The control: telling the verifier a q other than the one the proposals were drawn from is detected."""
    verifier, rng = _verifier(3), np.random.default_rng(3)
    wrong = np.full((1, 6), 1 / 6)
    steps = [_one_step(verifier, wrong, rng) for _ in range(DRAWS)]
    assert _fits([emitted[0] for _, emitted in steps], P[0]) < 1e-6


def test_identical_p_and_q_is_always_accepted():
    verifier, rng = _verifier(4), np.random.default_rng(4)
    logits = mx.array(np.log(np.vstack([P[:1], P[:1]])).astype(np.float32))
    for _ in range(50):
        x = int(rng.choice(6, p=P[0]))
        assert verifier.verify(logits, [x], mx.array(np.log(P[:1]).astype(np.float32)))[0] == 1


def test_verifier_pads_draft_probabilities_to_the_logits_width():
    """Target logits wider than the tokenizer's vocabulary: the missing columns have q = 0."""
    verifier = _verifier(5)
    logits = mx.array(np.log(np.hstack([P[:1], np.full((1, 2), 1e-9)])).repeat(2, axis=0).astype(np.float32))
    accepted, next_id = verifier.verify(logits, [0], mx.array(np.log(P[:1]).astype(np.float32)))
    assert accepted == 1 and 0 <= next_id < 8


# --------------------------------------------------------------------------- configuration


def test_speculative_is_chosen_for_tli_when_sampling():
    assert RunConfig(prompt="x", translator="tli", temp=0.8).verifier_name == "speculative"
    assert RunConfig(prompt="x", translator="tli").verifier_name == "greedy"
    assert RunConfig(prompt="x", translator="context", temp=0.8).verifier_name == "sample"
    assert RunConfig(prompt="x", translator="tli", temp=0.8, verifier="sample").verifier_name == "sample"


def test_run_wires_the_mask_and_the_probabilities():
    from conftest import tiny_loaded
    from specfw.run import Run

    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    greedy = Run(RunConfig(prompt="Ala", translator="tli"), target=target, draft=draft)
    assert greedy.draft_side.allowed is not None and not greedy.draft_side.draft_probs
    assert greedy.draft_side.allowed.shape == (draft.model.args.vocab_size,)
    sampled = Run(RunConfig(prompt="Ala", translator="tli", temp=0.7), target=target, draft=draft)
    assert sampled.draft_side.draft_probs and sampled.draft_side.drafter.sample
    context = Run(RunConfig(prompt="Ala", translator="context", temp=0.7), target=target, draft=draft)
    assert context.draft_side.allowed is None and not context.draft_side.draft_probs


def test_mlx_drafter_samples_only_allowed_ids_and_reports_q():
    from conftest import tiny_loaded
    from specfw.run import Run

    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    run = Run(RunConfig(prompt="Ala ma kota", translator="tli", temp=1.0, k=4), target=target, draft=draft)
    side = run.draft_side
    side.drafter.reset()
    ids = side.drafter.propose(side.prompt_ids, 4, side.allowed)
    q = side.drafter.last_probs
    assert q.shape == (4, draft.model.args.vocab_size)
    assert np.allclose(np.array(q.sum(axis=-1)), 1.0, atol=1e-4)
    assert not np.array(mx.where(side.allowed, 0.0, q)).any()  # no mass outside the intersection
    assert all(i in side.translator.draft_to_target for i in ids)
    assert all(q[row, i].item() > 0 for row, i in enumerate(ids))


# --------------------------------------------------------------------------- coverage


def test_corpus_coverage_on_polish_text_matches_a_direct_count(mistral, qwen):
    texts = [item.prompt for item in load_dataset("pl-questions")]
    report = corpus_coverage(qwen, mistral, texts)
    draft_bytes = {qwen.token_bytes(i) for i in range(qwen.vocab_size) if not qwen.is_special(i)}
    target_ids = [i for t in texts for i in mistral.encode(t)]
    direct = sum(1 for i in target_ids if mistral.token_bytes(i) in draft_bytes)
    assert report["texts"] == len(texts)
    assert report["target_tokens"] == len(target_ids)
    assert report["target_tokens_shared"] == direct
    assert 0 < report["target_token_coverage"] <= 1
    assert report["target_token_coverage"] == pytest.approx(direct / len(target_ids))
    assert 0 < report["draft_token_coverage"] <= 1
    assert report["shared"] == intersection(qwen, mistral).shared


def test_coverage_command_prints_one_json_row_per_pair_and_dataset(capsys):
    assert tli_main(["--pair", "qwen2.5:mistral-v0.1", "--dataset", "pl-questions", "--dataset", "en-prompts",
                     "--limit", "5", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["dataset"] for r in rows] == ["pl-questions", "en-prompts", "pl-questions+en-prompts"]
    assert rows[2]["target_tokens"] == rows[0]["target_tokens"] + rows[1]["target_tokens"]


def test_coverage_command_bad_pair_is_one_line(capsys):
    assert tli_main(["--pair", "qwen2.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("specfw: error: ")


def test_same_vocabulary_intersection_is_the_identity(qwen):
    inter = intersection(qwen, qwen)
    text_ids = [i for i in range(qwen.vocab_size) if not qwen.is_special(i)]
    assert inter.draft_to_target == {i: i for i in text_ids} == inter.target_to_draft


# --------------------------------------------------------------------------- command line


def test_specfw_run_with_tli_generates(capsys):
    """``specfw run --translator tli`` generates (it used to refuse): greedy equals the target alone, sampling works."""
    from specfw.cli import main

    tiny = ["--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5", "--prompt", "Zażółć gęślą jaźń",
            "--max-tokens", "8", "--json"]
    assert main(["run", *tiny, "--translator", "tli", "--k", "2"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["translator_used"] == "tli" and spec["verifier"] == "greedy"
    assert main(["run", *tiny, "--baseline"]) == 0
    assert spec["token_ids"] == json.loads(capsys.readouterr().out)["token_ids"]
    assert main(["run", *tiny, "--translator", "tli", "--temp", "0.8", "--seed", "3"]) == 0
    sampled = json.loads(capsys.readouterr().out)
    assert sampled["verifier"] == "speculative" and sampled["generated"] == 8


def test_tli_sampling_is_reproducible_for_a_seed():
    from conftest import tiny_loaded
    from specfw.run import Run

    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")

    def ids(seed):
        config = RunConfig(prompt="Ala ma kota", translator="tli", temp=0.8, seed=seed, max_tokens=10, k=3)
        return Run(config, target=target, draft=draft).result().token_ids

    assert ids(7) == ids(7)
    assert len({tuple(ids(s)) for s in range(4)}) > 1
