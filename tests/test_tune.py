"""``specfw tune``: measure a pair, write the recommendation into the priors file; run/eval use it by default."""

from __future__ import annotations

import json

import pytest

from specfw import priors
from specfw.cli import main
from specfw.study.tune import candidates, read_prompt_file, select_prompts
from specfw_plugins.k_policies import AdaptiveK

TINY = ["--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5"]


@pytest.fixture
def cache(tmp_path, monkeypatch, tmp_path_factory):
    """A model cache of this test's own (the tiny models linked from the session's), nothing learnt in-process."""
    shared = tmp_path_factory.getbasetemp() / "specfw-cache"
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    monkeypatch.setenv("SPECFW_CACHE", str(shared))
    from specfw.models.catalog import ensure_model

    for name in ("tiny-random-mistral", "tiny-random-qwen2.5"):
        (cache / "models" / name).symlink_to(ensure_model(name))
    monkeypatch.setenv("SPECFW_CACHE", str(cache))
    monkeypatch.setattr(AdaptiveK, "_learnt", {})
    monkeypatch.setattr(priors, "_warned", set())
    return cache


def _run_json(capsys, *flags) -> dict:
    capsys.readouterr()
    assert main(["run", *TINY, "--prompt", "Hello", "--max-tokens", "4", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_tune_writes_a_recommendation_that_run_then_uses(cache, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Zażółć gęślą jaźń\n\nThe quick brown fox\n", encoding="utf-8")
    before = _run_json(capsys)
    assert (before["drafter"], before["translator"], before["k_policy"], before["k"]) == ("mlx", "context", "fixed", 2)

    assert main(["tune", *TINY, "--prompts", str(prompts), "--max-tokens", "3", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "tune: [1/" in captured.err, "progress goes to stderr"
    rec = out["recommendation"]
    assert out["prompts"] == 2 and len(out["rows"]) == 1 + len(candidates())
    assert all(row["lossless"] for row in out["rows"])
    stored = json.loads((cache / "priors.json").read_text())["recommendations"]
    assert [v["drafter"] for v in stored.values()] == [rec["drafter"]]
    assert priors.recommendation("tiny-random-mistral", "tiny-random-qwen2.5") == rec

    used = _run_json(capsys)
    assert (used["drafter"], used["translator"], used["k_policy"], used["k"]) == (
        rec["drafter"], rec["translator"], rec["k_policy"], rec["k"])
    assert any("specfw tune" in note for note in used["notes"])

    explicit = _run_json(capsys, "--k-policy", "fixed", "--k", "3", "--translator", "naive", "--drafter", "mlx")
    assert (explicit["drafter"], explicit["translator"], explicit["k_policy"], explicit["k"]) == (
        "mlx", "naive", "fixed", 3), "explicit flags win"
    assert not any("specfw tune" in note for note in explicit["notes"])

    off = _run_json(capsys, "--no-priors")
    assert (off["drafter"], off["translator"], off["k_policy"], off["k"]) == ("mlx", "context", "fixed", 2)


def test_tune_reads_jsonl_prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "prompt": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    assert read_prompt_file(path) == ["a", "b"]
    assert select_prompts(str(path), None, 1) == ["a"]
    assert len(select_prompts(None, None, None)) == 6  # the default bundled selection


@pytest.mark.parametrize("content, flags, message", [
    ("", [], "holds no prompts"),
    ("\n  \n", [], "holds no prompts"),
    (None, [], "does not exist"),
    ('{"prompt": 3}\n', [], "no 'prompt' or 'text'"),
    ("a\n", ["--limit", "0"], "--limit must be at least 1"),
    ("a\n", ["--max-tokens", "0"], "--max-tokens must be at least 1"),
    ("a\n", ["--translator", "nope"], "nope"),
    ("a\n", ["--dataset", "en-prompts"], "not both"),
])
def test_tune_refuses_bad_input_with_one_line_and_writes_nothing(cache, tmp_path, capsys, content, flags, message):
    path = tmp_path / ("p.jsonl" if content and content.startswith("{") else "p.txt")
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code = main(["tune", *TINY, "--prompts", str(path), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("specfw: error:") and message in err[0], err
    assert not (cache / "priors.json").exists()


def test_tune_needs_both_models_or_neither(cache, capsys):
    assert main(["tune", "--target", "tiny-random-mistral", "--limit", "1"]) == 2
    assert "both --target and --draft" in capsys.readouterr().err
    assert not (cache / "priors.json").exists()


def test_eval_uses_the_recommendation_for_the_conditions_not_given(cache, tmp_path, capsys):
    priors.save_recommendation("tiny-random-mistral", "tiny-random-qwen2.5",
                               {"drafter": "mlx", "translator": "naive", "k_policy": "adaptive", "k": 3})
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "prompt": "Hello there"}\n', encoding="utf-8")

    def conditions(out, *flags):
        assert main(["eval", "--dataset", str(data), *TINY, "--out", str(out), "--max-tokens", "3",
                     "--no-progress", *flags]) == 0
        rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        return {(r["drafter"], r["translator"], r["k"]) for r in rows if r["condition"] != "baseline"}

    assert conditions(tmp_path / "rec") == {("tiny-random-qwen2.5 adaptive", "naive", 3)}
    assert conditions(tmp_path / "k", "--k", "1") == {("tiny-random-qwen2.5 adaptive", "naive", 1)}
    assert conditions(tmp_path / "off", "--no-priors") == {
        ("tiny-random-qwen2.5", t, k) for t in ("none", "naive", "context") for k in (2, 4)}
