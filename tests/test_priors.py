"""Priors: the adaptive policy's cost model kept in CACHE/priors.json across processes (specfw.priors)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, strategies as st

from specfw import priors
from specfw.cli import main
from specfw.config import RunConfig
from specfw.protocols import KPolicySetup
from specfw.run import Run
from specfw_plugins.k_policies import AdaptiveK, _CostModel, _SourceEstimate

from conftest import tiny_loaded
from test_lossless import PAIRS, PROMPTS


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache of this test's own, nothing learnt in this process, warnings not yet given."""
    monkeypatch.setenv("SPECFW_CACHE", str(tmp_path))
    monkeypatch.setattr(AdaptiveK, "_learnt", {})
    monkeypatch.setattr(priors, "_warned", set())
    return tmp_path


def _paying_model() -> _CostModel:
    """A cost model that says drafting pays: a cheap drafter whose tokens are nearly always accepted."""
    model = _CostModel(sources={"draft": _SourceEstimate(draft_per_token=0.001, accepted=200.0, rejected=2.0)})
    for n, t in ((1, 0.10), (3, 0.11), (5, 0.12)):
        model.w += 5
        model.wn += 5 * n
        model.wnn += 5 * n * n
        model.wt += 5 * t
        model.wnt += 5 * n * t
    model.elapsed = 10.0
    return model


def _policy(pair: str, *, use_priors: bool = True, draft_cost: float | None = 1.0) -> AdaptiveK:
    config = RunConfig(prompt="x", k=2, k_max=4, k_policy="adaptive")
    return AdaptiveK(KPolicySetup(config, pair=pair, priors=use_priors, draft_cost=draft_cost))


def _adaptive_run(prompt="Zażółć gęślą jaźń, a potem", pair=("mistral", "qwen"), max_tokens=16, **fields):
    fields.setdefault("priors", True)
    config = RunConfig(prompt=prompt, k=2, k_max=4, k_policy="adaptive", max_tokens=max_tokens, **fields)
    return Run(config, target=tiny_loaded(pair[0]), draft=tiny_loaded(pair[1]))


def _baseline_ids(prompt="Zażółć gęślą jaźń, a potem", target="mistral", max_tokens=16):
    config = RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens)
    return Run(config, target=tiny_loaded(target)).result().token_ids


def _run_pair_key(run: Run) -> str:
    return run.draft_side.k_policy.pair


def test_cost_model_round_trip(cache):
    model = _paying_model()
    model.sources["target"] = _SourceEstimate(draft_per_token=None, explore_cost=0.3, explored=2, explore_ids=40,
                                              positions=[[5.5, 2.0], [2.0, 1.5]])
    assert priors.save_cost_model("pair-a", model.as_dict())
    data = json.loads((cache / "priors.json").read_text())
    assert data["version"] == priors.VERSION
    assert list(data["adaptive"]) == [priors.adaptive_key("pair-a")]
    assert priors.device_key() in list(data["adaptive"])[0]
    assert _CostModel.from_dict(priors.load_cost_model("pair-a")) == model
    assert priors.load_cost_model("pair-b") is None


def test_damaged_values_take_their_starting_values(cache):
    model = _CostModel.from_dict({"w": "x", "wt": float("nan"), "sources": {"draft": {"accepted": -3, "ratio": None,
                                                                                      "draft_per_token": "?"}}})
    assert model.w == 0.0 and model.wt == 0.0
    assert model.sources["draft"] == _SourceEstimate(draft_per_token=None)
    for damaged in ("x", [[1.0]], [[1.0, 2.0]], [[float("nan"), 0.0]], [[3.0, 1.0], "y"]):
        source = _CostModel.from_dict({"sources": {"draft": {"positions": damaged}}}).sources["draft"]
        assert source.positions == [], damaged


def test_the_policy_uses_priors_from_the_first_cycle(cache):
    assert _policy("pair-p").choose() == 0, "cold, a drafter as costly as the target does not draft"
    AdaptiveK._learnt.clear()
    priors.save_cost_model("pair-p", _paying_model().as_dict())
    policy = _policy("pair-p")
    assert policy.started_from == "the priors file"
    assert policy.choose() >= 2
    assert _policy("pair-p", use_priors=False).started_from == "this process"  # kept in the process too
    AdaptiveK._learnt.clear()
    assert _policy("pair-p", use_priors=False).choose() == 0, "--no-priors: not read"


def test_a_run_writes_what_it_learnt_and_the_next_process_starts_from_it(cache):
    first = _adaptive_run()
    ids = first.result().token_ids
    key = priors.adaptive_key(_run_pair_key(first))
    stored = json.loads((cache / "priors.json").read_text())["adaptive"][key]
    assert stored["w"] > 0 and stored["elapsed"] > 0
    # a new process: nothing in memory; make the stored model say drafting pays
    AdaptiveK._learnt.clear()
    priors.save_cost_model(_run_pair_key(first), _paying_model().as_dict())
    second = _adaptive_run()
    result = second.result()
    assert "adaptive k: cost model from the priors file" in result.notes
    assert result.stats.prompt_pass_drafted, "the prompt pass drafts: the priors are used from the first cycle"
    assert result.token_ids == ids == _baseline_ids()


def test_no_priors_neither_reads_nor_writes(cache):
    _adaptive_run(priors=False).result()
    assert not (cache / "priors.json").exists()
    config = RunConfig(prompt="Hello", k_policy="adaptive", max_tokens=4)
    Run(config, target=tiny_loaded("mistral"), draft=tiny_loaded("qwen")).result()
    assert not (cache / "priors.json").exists(), "library use opts in (RunConfig(priors=True)); the CLI turns it on"
    flags = ["run", "--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5", "--prompt", "Hi",
             "--max-tokens", "4", "--k-policy", "adaptive", "--json"]
    assert main([*flags, "--no-priors"]) == 0 and not (cache / "priors.json").exists()
    assert main(flags) == 0 and (cache / "priors.json").exists(), "specfw run keeps what adaptive learnt"


@pytest.mark.parametrize("content", [
    b"{not json", b"", b"\xff\xfe garbage", b"[1, 2]",
    json.dumps({"version": 999, "adaptive": {}, "recommendations": {}}).encode(),
    json.dumps({"version": 1, "adaptive": [], "recommendations": {}}).encode(),
])
def test_a_bad_priors_file_warns_once_is_ignored_and_left_whole(cache, capsys, content):
    path = cache / "priors.json"
    path.write_bytes(content)
    for _ in range(2):  # two generations in one process: one warning
        AdaptiveK._learnt.clear()
        result = _adaptive_run().result()
        assert result.token_ids == _baseline_ids()
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("specfw: warning:")]
    assert len(warnings) == 1 and "priors file" in warnings[0], err
    assert "Traceback" not in err
    assert path.read_bytes() == content, "an unusable priors file is not written over"


def test_a_bad_priors_file_through_the_cli(cache, capsys):
    (cache / "priors.json").write_text("{\"version\": 1, \"adaptive\": {", encoding="utf-8")
    code = main(["run", "--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5", "--prompt", "Hi",
                 "--max-tokens", "4", "--k-policy", "adaptive", "--json"])
    err = capsys.readouterr().err
    assert code == 0
    assert [line for line in err.splitlines() if line.startswith("specfw:")] == [
        line for line in err.splitlines() if line.startswith("specfw: warning: priors file")]
    assert len([line for line in err.splitlines() if line.startswith("specfw: warning:")]) == 1


def test_concurrent_writers_leave_a_whole_file_with_every_entry(cache):
    def write(i):
        for j in range(10):
            priors.save_cost_model(f"pair-{i}-{j}", _paying_model().as_dict())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = json.loads((cache / "priors.json").read_text())
    assert len(data["adaptive"]) == 40
    assert not list(cache.glob(".priors-*")), "no temp file left behind"


@pytest.mark.slow
@given(prompt=PROMPTS, pair=st.sampled_from(PAIRS), translator=st.sampled_from(["none", "naive", "context", "tli"]),
       max_tokens=st.integers(4, 16))
def test_greedy_output_is_the_target_alones_with_priors_loaded(tmp_path_factory, prompt, pair, translator,
                                                               max_tokens):
    """Priors that make the policy draft far ahead from the first cycle change nothing in the output."""
    import os

    os.environ["SPECFW_CACHE"] = str(tmp_path_factory.mktemp("priors-cache"))
    saved = dict(AdaptiveK._learnt)
    try:
        AdaptiveK._learnt.clear()
        run = _adaptive_run(prompt, pair, max_tokens, translator=translator)
        priors.save_cost_model(_run_pair_key(run), _paying_model().as_dict())
        AdaptiveK._learnt.clear()
        result = _adaptive_run(prompt, pair, max_tokens, translator=translator).result()
        assert result.token_ids == _baseline_ids(prompt, pair[0], max_tokens)
    finally:
        AdaptiveK._learnt.clear()
        AdaptiveK._learnt.update(saved)
