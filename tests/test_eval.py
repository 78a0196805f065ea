"""`specfw eval`: records per (prompt, condition), resume without loss, report from records alone."""

from __future__ import annotations

import json

import pytest

from specfw.study import eval as specfw_eval
from specfw.cli import main
from specfw.errors import ConfigError
from specfw.study.eval import RECORDS, SweepConfig, load_sweep_file, read_records, run_sweep

TINY = dict(target="tiny-random-mistral", drafts=["tiny-random-qwen2.5"])


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "mini.jsonl"
    lines = [{"id": "a", "prompt": "Zażółć gęślą jaźń"}, {"id": "b", "prompt": "The capital of France is"},
             {"text": "Ala ma kota, a kot ma"}]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    return path


def _sweep(prompts, out, **kw) -> SweepConfig:
    fields = dict(datasets=[str(prompts)], translators=["none", "context"], k=[1, 2], max_tokens=6, out=out, **TINY)
    fields.update(kw)
    return SweepConfig(**fields)


def test_sweep_writes_one_lossless_record_per_prompt_and_condition(prompts, tmp_path):
    out = tmp_path / "out"
    report = run_sweep(_sweep(prompts, out), progress=False)
    records = read_records(out)
    assert len(records) == 3 * (1 + 4)
    assert len({r.key() for r in records}) == len(records)
    assert all(r.lossless for r in records)
    by_prompt = {r.prompt_id: r for r in records if r.is_baseline}
    for r in records:
        if not r.is_baseline:
            assert r.condition == f"tiny-random-qwen2.5/{r.translator}/k{r.k}/trim"
            assert r.speedup == pytest.approx(r.tps / by_prompt[r.prompt_id].tps)
            assert r.draft_bytes and r.target_bytes
        # accepted: the emitted draft ids; verified_accepted: the verifier's count, never fewer
        assert r.verified_accepted is not None and r.proposed >= r.verified_accepted >= r.accepted >= 0
        assert r.acceptance_rate == (r.accepted / r.proposed if r.proposed else 0.0)
    assert all(r.verified_accepted == 0 for r in records if r.is_baseline)
    assert report.name == "report.md" and report.exists()


def test_records_written_before_verified_accepted_still_load_and_resume(prompts, tmp_path):
    """Old records (no verified_accepted) are read as None, kept as they are on resume, and reported."""
    out = tmp_path / "out"
    run_sweep(_sweep(prompts, out, translators=["context"], k=[2]), progress=False)
    lines = (out / RECORDS).read_text().splitlines()
    assert len(lines) == 6 and all("verified_accepted" in json.loads(x) for x in lines)
    old = []
    for line in lines[:4]:
        record = json.loads(line)
        del record["verified_accepted"]
        old.append(json.dumps(record, ensure_ascii=False))
    (out / RECORDS).write_text("\n".join(old) + "\n")
    report = run_sweep(_sweep(prompts, out, translators=["context"], k=[2]), progress=False)
    final = (out / RECORDS).read_text().splitlines()
    assert final[:4] == old and len(final) == 6
    records = read_records(out)
    assert [r.verified_accepted for r in records[:4]] == [None] * 4
    assert all(r.verified_accepted is not None for r in records[4:])
    assert report.exists()


def test_sweep_runs_drafter_plugins_and_k_policies(prompts, tmp_path):
    """Each drafter plugin x k policy is a condition set; a model-free drafter runs once, without translation."""
    out = tmp_path / "out"
    sweep = _sweep(prompts, out, translators=["context"], k=[2], drafter=["mlx", "lookup", "lookup+mlx"],
                   k_policies=["fixed", "adaptive"])
    run_sweep(sweep, progress=False)
    records = read_records(out)
    drafters = {r.drafter for r in records if not r.is_baseline}
    assert drafters == {"tiny-random-qwen2.5", "tiny-random-qwen2.5 adaptive", "lookup", "lookup adaptive",
                        "tiny-random-qwen2.5 lookup+mlx", "tiny-random-qwen2.5 lookup+mlx adaptive"}
    assert len(records) == 3 * (1 + 6)
    assert all(r.lossless for r in records)
    assert {r.translator for r in records if not r.is_baseline and r.drafter.startswith("lookup")} == {"identity"}
    assert all(r.draft_bytes is None for r in records if not r.is_baseline and r.drafter.startswith("lookup"))


def test_interrupted_sweep_resumes_and_loses_nothing(prompts, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_append = specfw_eval.append_record
    calls = {"n": 0}

    def append_then_interrupt(folder, record):
        real_append(folder, record)
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(specfw_eval, "append_record", append_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep(prompts, out), progress=False)
    first = (out / RECORDS).read_text().splitlines()
    assert len(first) == 7
    # A run killed mid-write leaves half a line: it is dropped, everything before it is kept.
    with open(out / RECORDS, "a") as sink:
        sink.write(first[-1][: len(first[-1]) // 2])
    monkeypatch.setattr(specfw_eval, "append_record", real_append)
    run_sweep(_sweep(prompts, out), progress=False)
    final = (out / RECORDS).read_text().splitlines()
    assert final[:7] == first  # nothing already written was lost or rewritten
    assert len(final) == 15 and len({tuple(json.loads(x)[k] for k in ("dataset", "prompt_id", "condition")) for x in final}) == 15


def test_changed_settings_refuse_the_same_out(prompts, tmp_path):
    out = tmp_path / "out"
    run_sweep(_sweep(prompts, out, translators=["context"], k=[1]), progress=False)
    with pytest.raises(ConfigError, match="max_tokens"):
        run_sweep(_sweep(prompts, out, translators=["context"], k=[1], max_tokens=7), progress=False)


def test_report_is_rebuilt_from_records_alone(prompts, tmp_path, capsys):
    out = tmp_path / "out"
    report = run_sweep(_sweep(prompts, out, translators=["context"], k=[2]), progress=False)
    original = report.read_text()
    report.unlink()
    assert main(["eval", "report", str(out)]) == 0
    assert report.read_text() == original
    assert main(["eval", "report", str(tmp_path / "nowhere")]) == 2
    assert "has no records.jsonl" in capsys.readouterr().err


def test_toml_and_flags_build_the_same_sweep(prompts, tmp_path):
    toml = tmp_path / "sweep.toml"
    toml.write_text(
        f'datasets = ["{prompts}"]\ntranslators = ["naive", "context"]\nk = [1, 4]\n'
        f'target = "tiny-random-mistral"\ndrafts = ["tiny-random-qwen2.5"]\nmax_tokens = 5\nout = "{tmp_path / "o"}"\n'
    )
    from_file = load_sweep_file(toml, {})
    from_flags = SweepConfig(datasets=[str(prompts)], translators=["naive", "context"], k=[1, 4], max_tokens=5,
                             out=tmp_path / "o", **TINY)
    assert from_file == from_flags
    assert load_sweep_file(toml, {"max_tokens": 9}).max_tokens == 9


def test_eval_cli_sampling_with_the_slrs_verifier_and_its_options(prompts, tmp_path, capsys):
    """--temp, --verifier and --verifier-option reach every run, and a resumed sweep must keep them."""
    out = tmp_path / "o"
    argv = ["eval", "--dataset", str(prompts), "--out", str(out), "--target", "tiny-random-mistral",
            "--draft", "tiny-random-qwen2.5", "--translators", "naive", "--k", "2", "--max-tokens", "8",
            "--temp", "1.0", "--verifier", "slrs", "--no-progress"]
    forced = ["--verifier-option", "branches=0", "--verifier-option", "min_mass=1e-9"]  # falls back where it can
    assert main(argv + forced) == 0
    saved = json.loads((out / "sweep.json").read_text())
    assert (saved["temp"], saved["verifier"], saved["verifier_options"]) == (1.0, "slrs", {"branches": "0", "min_mass": "1e-9"})
    drafted = [r for r in read_records(out) if not r.is_baseline]
    assert len(drafted) == 3 and sum(r.proposed for r in drafted) > 0
    assert sum(r.fallback_cycles for r in drafted) > 0  # the options reached the verifier
    capsys.readouterr()
    assert main(argv + ["--verifier-option", "depth=1"]) == 2  # other verifier settings: not mixed in one folder
    assert "verifier_options" in capsys.readouterr().err


def test_eval_cli_bad_input_is_one_line(prompts, tmp_path, capsys):
    cases = [
        (["eval", "--out", str(tmp_path / "o")], "give --dataset"),
        (["eval", "--dataset", "no-such-set", "--out", str(tmp_path / "o")], "no-such-set"),
        (["eval", "--dataset", str(prompts), "--out", str(tmp_path / "o"), "--translators", "bogus",
          "--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5"], "unknown translator 'bogus'"),
        (["eval", "--config", str(tmp_path / "missing.toml")], "does not exist"),
        (["eval", "--dataset", str(prompts), "--out", str(tmp_path / "o"), "--k", "0"], "k must be >= 1"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and needle in err[0] and err[0].startswith("specfw: error:"), (argv, err)
