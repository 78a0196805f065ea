"""The drafter's prompt: the target's BOS text first when the draft tokenizer adds no BOS of its own.

The paper's implementation decodes the target's prompt ids, BOS included, and
encodes that text for its drafter; on the default pair (SmolLM2 drafting for
Gemma 3) the drafter then accepted more per target pass. specfw does the same
by default (``RunConfig.draft_prompt_prefix`` None), only on the drafter's
side: the target's prompt, and so every emitted id, is unchanged.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from specfw.cli import main
from specfw.config import RunConfig
from specfw.run import Run, draft_prompt_ids, prompt_ids
from specfw.models.catalog import load_tokenizer

from conftest import tiny_loaded

PROMPT = "Jak ugotować barszcz czerwony?"


@pytest.mark.parametrize("draft, target, prefix", [
    ("smollm2", "gemma3", "<bos>"),  # the default pair
    ("qwen2.5", "mistral-v0.1", "<s>"),
])
def test_a_draft_tokenizer_without_bos_gets_the_targets_bos_text(draft, target, prefix):
    draft_tok, target_tok = load_tokenizer(draft), load_tokenizer(target)
    assert not draft_tok.add_bos and target_tok.add_bos
    ids = draft_prompt_ids(draft_tok, target_tok, PROMPT)
    assert ids == draft_tok.encode(prefix + PROMPT)
    assert draft_tok.decode(ids) == prefix + PROMPT  # text, not the draft's special ids
    assert draft_prompt_ids(draft_tok, target_tok, PROMPT, "") == prompt_ids(draft_tok, PROMPT)
    assert draft_prompt_ids(draft_tok, target_tok, PROMPT, "### ") == draft_tok.encode("### " + PROMPT)


def test_a_draft_tokenizer_with_its_own_bos_keeps_it():
    llama, mistral = load_tokenizer("llama3"), load_tokenizer("mistral-v0.1")
    assert draft_prompt_ids(llama, mistral, PROMPT) == prompt_ids(llama, PROMPT)
    assert draft_prompt_ids(llama, mistral, PROMPT)[0] == llama.bos_id


def test_a_target_without_bos_adds_nothing():
    qwen, smollm2 = load_tokenizer("qwen2.5"), load_tokenizer("smollm2")
    assert draft_prompt_ids(smollm2, qwen, PROMPT) == prompt_ids(smollm2, PROMPT)


def test_run_puts_the_prefix_on_the_drafter_side_only():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    run = Run(RunConfig(prompt=PROMPT, max_tokens=4), target=target, draft=draft)
    assert run.draft_side.prompt_ids == draft.tokenizer.encode("<s>" + PROMPT)
    assert run.target_side.prompt_ids == prompt_ids(target.tokenizer, PROMPT)
    run = Run(RunConfig(prompt=PROMPT, max_tokens=4, draft_prompt_prefix=""), target=target, draft=draft)
    assert run.draft_side.prompt_ids == prompt_ids(draft.tokenizer, PROMPT)
    same = Run(RunConfig(prompt=PROMPT, max_tokens=4), target=target, draft=tiny_loaded("mistral"))
    assert same.draft_side.prompt_ids == same.target_side.prompt_ids  # same tokenizer: the target's own ids


@given(prompt=st.text(min_size=1, max_size=30).filter(str.strip), prefix=st.sampled_from([None, "", "<bos>", "Q: "]),
       translator=st.sampled_from(["naive", "context", "tli"]), k=st.integers(1, 3))
def test_any_prefix_leaves_the_output_equal_to_the_target_alone(prompt, prefix, translator, k):
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=8), target=target).result()
    config = RunConfig(prompt=prompt, max_tokens=8, translator=translator, k=k, draft_prompt_prefix=prefix)
    assert Run(config, target=target, draft=draft).result().token_ids == baseline.token_ids


def test_cli_takes_an_empty_prefix(capsys):
    args = ["run", "--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5", "--prompt", PROMPT,
            "--max-tokens", "3", "--draft-prompt-prefix", "", "--json"]
    assert main(args) == 0
