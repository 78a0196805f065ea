"""Emulated larger targets (``--emulate-target``): the real target's output, a shadow model's cost.

The shadow is forwarded on exactly the ids of every target pass and its cache
is trimmed with the target's, so greedy output must equal the target alone
for every translator, cache-sync and k (hypothesis, real tokenizers), and the
shadow's cache must hold what a forward of the same ids gives.
"""

from __future__ import annotations

import mlx.core as mx
import pytest
from hypothesis import given, strategies as st
from mlx.utils import tree_flatten
from mlx_lm.models.cache import make_prompt_cache

from specfw.cli import main
from specfw.config import RunConfig
from specfw.models.emulation import (SHAPES, ShadowedModel, Shape, build_shadow, check_fits, emulation_of,
                              parameter_count, parse_shape, shadowed)
from specfw.errors import ConfigError
from specfw.study.eval import SweepConfig, read_records, run_sweep
from specfw.models.prompt_cache import PromptCache
from specfw.run import Run

from conftest import tiny_loaded
from test_lossless import PAIRS, PROMPTS, _replay_reference


@pytest.fixture(scope="module")
def emulated():
    """Each tiny target of the lossless pairs with a tiny shadow behind it."""
    return {key: shadowed(tiny_loaded(key), "tiny") for key in {t for t, _ in PAIRS}}


@pytest.mark.slow
@given(prompt=PROMPTS, pair=st.sampled_from(PAIRS), k=st.integers(1, 4), max_tokens=st.integers(4, 12),
       translator=st.sampled_from(["naive", "context"]), cache_sync=st.sampled_from(["trim", "rewind"]),
       drafter=st.sampled_from(["mlx", "replay", "lookup+mlx"]))
def test_greedy_output_is_the_real_targets(emulated, prompt, pair, k, max_tokens, translator, cache_sync, drafter):
    real, draft = tiny_loaded(pair[0]), tiny_loaded(pair[1])
    alone = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens), target=real).result()
    target = emulated[pair[0]]
    options = {"reference": _replay_reference(real, draft, prompt, alone)} if drafter == "replay" else {}
    config = RunConfig(prompt=prompt, max_tokens=max_tokens, k=k, translator=translator, cache_sync=cache_sync,
                       drafter=drafter, drafter_options=options, k_policy="adaptive" if drafter != "replay" else "fixed")
    assert Run(config, target=target, draft=draft).result().token_ids == alone.token_ids
    base = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens), target=target).result()
    assert base.token_ids == alone.token_ids


@pytest.mark.parametrize("cache_sync", ["trim", "rewind"])
def test_shadow_cache_holds_exactly_the_targets_ids(emulated, cache_sync):
    """After a run the shadow's cache holds the ids the target's holds, as a forward of those ids gives them."""
    real, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    target = emulated["mistral"]
    prompt = "Zażółć gęślą jaźń w Warszawie, a potem"
    alone = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=16), target=real).result()
    cache = PromptCache()
    run = Run(RunConfig(prompt=prompt, max_tokens=16, k=3, cache_sync=cache_sync, drafter="replay",
                        drafter_options={"reference": _replay_reference(real, draft, prompt, alone)}),
              target=target, draft=draft)
    tokens = list(run.stream(prompt_cache=cache))
    assert run.stats.accepted > 0  # rejections and acceptances both trimmed the caches
    layers, ids, fed_after, held = cache._target
    assert len({c.offset for c in layers}) == 1 and layers[0].offset == held
    held_ids = (list(ids) + list(fed_after))[:held]
    assert held_ids[: len(run.target_side.prompt_ids)] == run.target_side.prompt_ids
    assert len(tokens) == 16
    model: ShadowedModel = target.model
    fresh = make_prompt_cache(model.shadow)
    model.shadow(mx.array(held_ids)[None] % model.vocab, cache=fresh)
    for kept, again in zip(layers[model.n_target :], fresh):
        assert kept.offset == again.offset == held
        assert mx.allclose(kept.keys[..., :held, :], again.keys[..., :held, :], atol=1e-5).item()


def test_cold_start_counts_the_shadow_in_the_targets_cost():
    """adaptive's first guess of the drafter's cost (parameter bytes' ratio) sees the emulated target's size."""
    from specfw.priors import draft_cost_hint, model_bytes

    real, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    emulated = shadowed(real, "tiny")
    assert model_bytes(emulated.model) == model_bytes(real.model) + model_bytes(emulated.model.shadow)
    assert draft_cost_hint(emulated.model, draft.model) < draft_cost_hint(real.model, draft.model)


def test_emulated_target_is_named_and_keeps_the_real_source():
    loaded = shadowed(tiny_loaded("mistral"), "tiny")
    assert loaded.source == "tiny:mistral+shadow:tiny"
    assert emulation_of(loaded.model) == "tiny" and emulation_of(tiny_loaded("mistral").model) is None
    with pytest.raises(ConfigError, match="already emulated"):
        shadowed(loaded, "tiny")
    result = Run(RunConfig(prompt="Ala ma kota", baseline=True, max_tokens=4), target=loaded).result()
    assert result.as_dict()["emulated_target"] == "tiny"
    assert any("emulated target" in note for note in result.notes)


@pytest.mark.parametrize("config", [
    dict(model_type="llama", hidden_size=64, num_hidden_layers=3, intermediate_size=96, num_attention_heads=4,
         num_key_value_heads=2, head_dim=16, vocab_size=300, rope_theta=1e4, tie_word_embeddings=False),
    dict(model_type="qwen2", hidden_size=48, num_hidden_layers=2, intermediate_size=80, num_attention_heads=6,
         num_key_value_heads=2, vocab_size=200, rope_theta=1e6, tie_word_embeddings=True),
])
def test_parameter_count_matches_the_built_model(config, monkeypatch):
    monkeypatch.setitem(SHAPES, "probe", config)
    shape = parse_shape("probe")
    model = build_shadow(shape)
    assert shape.parameters() == parameter_count(shape.config) == sum(v.size for _, v in tree_flatten(model.parameters()))


def test_shapes_have_their_models_sizes():
    """The offered shapes are the real models' decoders (parameters within 1% of the published sizes)."""
    published = {"llama-3.2-1b": 1.236e9, "qwen2.5-1.5b": 1.544e9, "llama-3.2-3b": 3.213e9, "mistral-7b": 7.242e9}
    for name, size in published.items():
        assert parse_shape(name).parameters() == pytest.approx(size, rel=0.01)


@pytest.mark.parametrize("spec, message", [
    ("gpt-5", "unknown emulated target shape 'gpt-5'"),
    ("llama-3.2-1b:layers=0", "layers=N with N in 1..16"),
    ("llama-3.2-1b:layers=17", "layers=N with N in 1..16"),
    ("llama-3.2-1b:heads=4", "the only option is layers=N"),
])
def test_bad_shapes_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_shape(spec)


def test_a_shape_that_does_not_fit_names_the_layers_that_would():
    shape = parse_shape("mistral-7b")
    room = 12 * 1024**3
    with pytest.raises(ConfigError, match=r"needs 29\.0 GB .* mistral-7b:layers=\d+ fits"):
        check_fits(shape, 4, available=room)
    message = ""
    try:
        check_fits(shape, 4, available=room)
    except ConfigError as exc:
        message = str(exc)
    layers = int(message.rsplit("layers=", 1)[1].split()[0])
    check_fits(Shape("mistral-7b", layers), 4, available=room)  # the named size fits
    with pytest.raises(ConfigError):
        check_fits(Shape("mistral-7b", layers + 1), 4, available=room)


@pytest.mark.parametrize("argv", [
    ["run", "--emulate-target", "gpt-5", "--prompt", "hi"],
    ["run", "--emulate-target", "llama-3.2-1b:layers=99", "--prompt", "hi"],
])
def test_cli_refuses_a_bad_shape_in_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("specfw: error:") and "emulate" in err[0]


def test_eval_records_name_the_emulated_target(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Ala ma kota"}\n')
    out = tmp_path / "out"
    sweep = SweepConfig(datasets=[str(prompts)], translators=["context"], k=[2], max_tokens=5, out=out,
                        target="tiny-random-mistral", drafts=["tiny-random-qwen2.5"], emulate_target="tiny")
    run_sweep(sweep, progress=False)
    records = read_records(out)
    assert len(records) == 2 and all(r.lossless for r in records)
    assert {r.target for r in records} == {"tiny-random-mistral+shadow:tiny"}
    assert "**Emulated target** (`--emulate-target tiny`" in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match="emulate_target"):  # a resumed sweep keeps the emulation
        run_sweep(sweep.model_copy(update={"emulate_target": None}), progress=False)
