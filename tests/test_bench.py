"""`specfw bench overhead`: both ratios come out of one run, from equal outputs, on the models given."""

from __future__ import annotations

import json

import pytest

from specfw.cli import main


def test_overhead_json_has_both_ratios(capsys):
    assert main(["bench", "overhead", "--target", "tiny-random-mistral", "--tokens", "12", "--rounds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target"] == result["draft"] == "tiny-random-mistral"
    assert result["sd_acceptance"] == 1.0  # the target drafting for itself is always accepted
    for side in ("specfw_ar_s", "mlx_lm_ar_s", "specfw_sd_s", "mlx_lm_sd_s"):
        assert result[side] > 0
    assert result["ar_vs_mlx_lm"] == pytest.approx(result["mlx_lm_ar_s"] / result["specfw_ar_s"])
    assert result["sd_vs_mlx_lm"] == pytest.approx(result["mlx_lm_sd_s"] / result["specfw_sd_s"])
    assert result["goals"] == {"ar_vs_mlx_lm": 0.98, "sd_vs_mlx_lm": 1.0}


def test_overhead_refuses_a_cross_tokenizer_draft(capsys):
    code = main(["bench", "overhead", "--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5",
                 "--tokens", "4", "--rounds", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "one tokenizer" in err[0]


def test_overhead_bad_counts_are_one_line(capsys):
    assert main(["bench", "overhead", "--k", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--k must be at least 1" in err[0]


def test_costs_measure_r_and_c_for_the_real_and_an_emulated_target(capsys):
    assert main(["bench", "costs", "--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5",
                 "--emulate-target", "none", "--emulate-target", "tiny", "--k", "1,2", "--rounds", "1",
                 "--context", "16", "--json"]) == 0
    real, emulated = json.loads(capsys.readouterr().out)
    assert real["target"] == "tiny-random-mistral" and emulated["target"] == "tiny-random-mistral+shadow:tiny"
    for result in (real, emulated):
        t = {int(n): ms for n, ms in result["target_ms"].items()}
        assert sorted(t) == [1, 2, 3] and all(ms > 0 for ms in t.values())
        assert result["r"] == pytest.approx(result["draft_ms"] / t[1])
        for k in (1, 2):
            c = result["c"][str(k)]
            assert c == pytest.approx((t[k + 1] - t[1]) / (k * k * t[1]))
            assert result["alpha_star"][str(k)] == pytest.approx(((k + 1) * result["r"] + c * k * k) / k)


def test_costs_refuse_an_unknown_shape_in_one_line(capsys):
    assert main(["bench", "costs", "--emulate-target", "gpt-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown emulated target shape 'gpt-5'" in err[0]
