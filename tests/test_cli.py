"""The command line: runs, plugin listing, and bad input.

Bad input must give exactly one ``specfw: error: ...`` line on stderr, a
non-zero exit, and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from specfw.cli import main


def _cli(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "specfw.cli", *args], capture_output=True, text=True, env=full_env, input=stdin, timeout=600
    )


def _one_error_line(capsys_or_proc) -> str:
    err = capsys_or_proc.stderr if hasattr(capsys_or_proc, "stderr") else capsys_or_proc.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("specfw: error: ")
    assert "Traceback" not in err
    return lines[0]


TINY = ["--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5"]


@pytest.mark.slow
def test_run_json_on_a_tiny_pair_is_lossless():
    args = ["run", *TINY, "--prompt", "Zażółć gęślą jaźń w Warszawie.", "--max-tokens", "12", "--json"]
    spec = _cli(*args, "--translator", "context", "--k", "2")
    assert spec.returncode == 0, spec.stderr
    out = json.loads(spec.stdout)
    for key in ("target", "draft", "translator", "k", "cache_sync", "verifier", "text", "token_ids", "generated",
                "cycles", "proposed", "accepted", "verified_accepted", "acceptance_rate", "tps", "prompt_s",
                "decode_s"):
        assert key in out, key
    # accepted: the emitted draft ids (the from_draft tokens); verified_accepted: the verifier's count
    assert out["proposed"] >= out["verified_accepted"] >= out["accepted"] >= 0
    assert out["translator"] == "context" and out["k"] == 2 and out["cache_sync"] == "trim"
    assert out["target"] == "tiny-random-mistral" and any("random weights" in n for n in out["notes"])
    base = json.loads(_cli(*args, "--baseline").stdout)
    assert out["token_ids"] == base["token_ids"] and len(out["token_ids"]) == out["generated"]


@pytest.mark.slow
def test_run_streams_text_to_stdout_and_stats_to_stderr():
    proc = _cli("run", *TINY, "--prompt", "Ala ma kota", "--max-tokens", "6", "--k", "3", "--cache-sync", "rewind")
    assert proc.returncode == 0, proc.stderr
    assert "acceptance=" in proc.stderr and "tok/s" in proc.stderr and "random weights" in proc.stderr
    assert " accepted=" in proc.stderr and " verified_accepted=" in proc.stderr
    assert "acceptance=" not in proc.stdout


def test_plugins_lists_every_builtin(capsys):
    assert main(["plugins", "--json"]) == 0
    listed = {(p["kind"], p["name"]) for p in json.loads(capsys.readouterr().out)}
    expected = {("drafter", "mlx"), ("drafter", "replay"), ("verifier", "greedy"), ("verifier", "sample"),
                ("cache_sync", "trim"), ("cache_sync", "rewind")}
    expected |= {("translator", n) for n in ("identity", "none", "naive", "context", "tli")}
    assert expected <= listed


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--target", "/nonexistent/model", "--draft", "/nonexistent/draft"], "does not exist"),
        (["--k", "0"], "invalid k"),
        (["--translator", "bogus"], "unknown translator 'bogus'; known: "),
        (["--cache-sync", "bogus"], "known: rewind, trim"),
        (["--verifier", "greedy", "--temp", "0.7"], "--verifier sample"),
        (["--verifier-option", "depth"], "--verifier-option expects KEY=VALUE"),
        ([*TINY, "--temp", "0.7", "--verifier", "slrs", "--verifier-option", "depth=3"], "depth 1 or 2"),
        ([*TINY, "--temp", "0.7", "--verifier", "slrs", "--verifier-option", "bogus=1"], "has no option 'bogus'"),
        ([*TINY, "--translator-option", "bogus=1"], "translator 'context' has no option 'bogus'"),
        ([*TINY, "--translator", "naive", "--translator-option", "unstable_share=0.4"], "it takes none"),
        ([*TINY, "--translator-option", "back_window=-1"], "back_window must be >= 0"),
        ([*TINY, "--translator-option", "back_window=wide"], "back_window must be 'auto' or a whole number"),
        ([*TINY, "--translator-option", "close=-1"], "close must be >= 0"),
        ([*TINY, "--translator-option", "close=some"], "close must be a whole number >= 0"),
        (["--prompt-file", "/nonexistent/prompt.txt"], "prompt file '/nonexistent/prompt.txt' does not exist"),
        (["--target", "/nonexistent/model"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(capsys, args, needle):
    if "--prompt-file" not in args:
        args = ["--prompt", "hello", *args]
    assert main(["run", *args]) == 2
    assert needle in _one_error_line(capsys)


def test_unknown_translator_lists_known_ones(capsys):
    main(["run", "--prompt", "x", "--translator", "bogus"])
    line = _one_error_line(capsys)
    for name in ("context", "naive", "none", "tli"):
        assert name in line


def test_empty_prompt(capsys):
    assert main(["run", "--prompt", "   "]) == 2
    assert "prompt is empty" in _one_error_line(capsys)


def test_prompt_longer_than_context(capsys, tmp_path):
    from specfw.models.catalog import ensure_model
    from specfw.models.loading import read_config

    limit = read_config(ensure_model("tiny-random-mistral"))["max_position_embeddings"]
    prompt = tmp_path / "long.txt"
    prompt.write_text("Ala ma kota. " * limit)
    assert main(["run", *TINY, "--prompt-file", str(prompt)]) == 2
    assert f"longer than the target's context of {limit}" in _one_error_line(capsys)


def test_hf_id_without_network_suggests_a_local_path():
    proc = _cli("run", "--prompt", "hi", "--target", "mlx-community/no-such-model-xyz", "--baseline",
                env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "mlx-community/no-such-model-xyz" in line and "local folder" in line


def test_missing_command_and_help():
    proc = _cli()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    helped = _cli("run", "--help")
    assert helped.returncode == 0
    for flag in ("--translator", "--k", "--cache-sync", "--verifier", "--prefix-window", "--prompt-file",
                 "--max-tokens", "--temp", "--seed", "--baseline", "--json"):
        assert flag in helped.stdout
