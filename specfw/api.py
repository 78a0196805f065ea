"""mlx-lm-style library API: ``stream_generate``, ``generate`` and ``load``.

Migrating from mlx-lm takes one import and two arguments::

    from mlx_lm import load
    from specfw import stream_generate          # instead of mlx_lm's
    for r in stream_generate(model, tokenizer, prompt, draft_model=draft, draft_tokenizer=draft_tok):
        print(r.text, end="")

The models may come from ``mlx_lm.load`` or :func:`load`; the drafter may use
another tokenizer than the target. Responses have the fields of mlx-lm's
``GenerationResponse`` (``logprobs`` is None: specfw does not compute them)
plus the running speculative statistics. Under greedy decoding the tokens are
those of ``mlx_lm.stream_generate`` on the target alone. Everything runs
through the same :class:`specfw.run.Run` as ``specfw run``.
"""

from __future__ import annotations

import codecs
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import mlx.core as mx

from specfw.config import RunConfig
from specfw.errors import ConfigError
from specfw.models.loading import LoadedModel, load_model
from specfw.run import Run
from specfw.text import common_prefix_len
from specfw.tokenizers import Tokenizer, load_tokenizer, same_vocabulary


class PromptRun(Run):
    """A :class:`Run` whose prompt ids are given rather than derived from ``config.prompt``.

    For prompts that arrive as ids or as rendered chats (the server, the API).
    ``draft_ids`` None lets the drafter's ids come from ``config.prompt`` as
    usual; a drafter without a model (lookup) drafts over the target's ids.
    """

    def __init__(self, config: RunConfig, target_ids: Sequence[int], draft_ids: Sequence[int] | None = None,
                 **kwargs: Any) -> None:
        self._given_ids = (list(target_ids), None if draft_ids is None else list(draft_ids))
        super().__init__(config, **kwargs)
        side = self.draft_side
        if side is not None and self.draft is None and side.tokenizer is self.target.tokenizer:
            side.prompt_ids = list(target_ids)

    def _draft_prompt_ids(self, draft_tok: Tokenizer, same_ids: bool) -> list[int]:
        draft_ids = self._given_ids[1]
        return list(draft_ids) if draft_ids is not None else super()._draft_prompt_ids(draft_tok, same_ids)

    def _prompt_ids(self, loaded: LoadedModel | None, tokenizer: Tokenizer) -> list[int]:
        target_ids, draft_ids = self._given_ids
        if loaded is self.target and tokenizer is self.target.tokenizer:
            return list(target_ids)
        if draft_ids is not None:
            return list(draft_ids)
        return super()._prompt_ids(loaded, tokenizer)


class SamplerVerifier:
    """Verification with an mlx-lm ``sampler`` (a function from log-probabilities to ids).

    The sampler draws the target's id at every verified position and a
    proposed id is accepted iff it equals the draw (the ``sample`` verifier's
    rule), so each emitted id is exactly what the sampler would pick for the
    target alone at that position.
    """

    name = "sampler"

    def __init__(self, sampler: Callable[[mx.array], mx.array]) -> None:
        self.sampler = sampler

    def verify(self, logits: mx.array, proposed: Sequence[int], draft_logprobs: mx.array | None = None) -> tuple[int, int]:
        draws = self.sampler(logits - mx.logsumexp(logits, axis=-1, keepdims=True)).tolist()
        accepted = common_prefix_len(draws, proposed)
        return accepted, draws[accepted]

    def next_id(self, logits: mx.array) -> mx.array:
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return self.sampler(logprobs[None]).reshape(())


@dataclass
class GenerationResponse:
    """One generated token, as mlx-lm's ``GenerationResponse``, with the speculative statistics so far.

    ``text`` is the text this token completes (may be empty); ``from_draft``:
    a draft proposal was accepted for it. ``accepted`` counts the accepted
    draft ids emitted so far (the ``from_draft`` responses), ``verified_accepted``
    what the verifier accepted (it may include ids a last cycle cut), as in
    :class:`specfw.stats.RunStats`. ``finish_reason`` is "length" or
    "stop" on the last response, else None; a generation stopped by an end
    token ends with a response for that token (empty text), as mlx-lm's does.
    """

    text: str
    token: int
    logprobs: None
    from_draft: bool
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float
    finish_reason: str | None
    proposed: int
    accepted: int
    verified_accepted: int
    acceptance_rate: float
    cycles: int


def load(spec: str) -> tuple[Any, Tokenizer]:
    """``(model, tokenizer)`` for a known model name, an MLX folder or a hub id, as ``specfw run`` loads them.

    The tokenizer is specfw's (the real tokenizer's ids); both go straight to
    :func:`stream_generate`.
    """
    loaded = load_model(spec)
    _LOADED_FROM[id(loaded.model)] = loaded
    return loaded.model, loaded.tokenizer


# Models returned by load(), by id, to recover where they came from.
_LOADED_FROM: dict[int, LoadedModel] = {}


@functools.lru_cache(maxsize=8)
def _folder_tokenizer(folder: str) -> Tokenizer:
    return load_tokenizer(folder)


def as_specfw_tokenizer(tokenizer: Any) -> Tokenizer:
    """specfw's tokenizer for ``tokenizer``: itself, or for an mlx-lm ``TokenizerWrapper`` (or a transformers
    tokenizer) the one specfw loads from the same folder, which gives the real tokenizer's ids."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    folder = getattr(hf, "name_or_path", None)
    if isinstance(folder, str) and folder and Path(folder).is_dir():
        return _folder_tokenizer(folder)
    raise ConfigError(
        f"cannot find the files of tokenizer {type(tokenizer).__name__} (name_or_path={folder!r}); "
        "pass a tokenizer loaded from a local folder, or use specfw.load"
    )


def _stop_ids(tokenizer: Any, tok: Tokenizer) -> frozenset[int]:
    """The ids that end generation: an mlx-lm tokenizer's own ``eos_token_ids`` (so stopping matches mlx-lm), else specfw's."""
    ids = getattr(tokenizer, "eos_token_ids", None)
    return frozenset(int(i) for i in ids) if ids else frozenset(tok.eos_ids)


def _as_loaded(model: Any, tok: Tokenizer, name: str) -> LoadedModel:
    known = _LOADED_FROM.get(id(model))
    if known is not None and known.model is model:
        return LoadedModel(model, tok, known.source, known.path, known.context_length, known.weight_bytes)
    context = getattr(getattr(model, "args", None), "max_position_embeddings", None)
    return LoadedModel(model, tok, name, Path("."), context if isinstance(context, int) else None, 0)


def encode_prompt(prompt: str | Sequence[int] | mx.array, tok: Tokenizer) -> list[int]:
    """Prompt ids as mlx-lm makes them: a string's special-token strings become their ids and BOS is added
    unless it is already there; ids (a list or an ``mx.array``) are taken as they are."""
    if isinstance(prompt, mx.array):
        return [int(i) for i in prompt.reshape(-1).tolist()]
    if not isinstance(prompt, str):
        return [int(i) for i in prompt]
    ids = tok.encode_with_specials(prompt)
    if tok.add_bos and tok.bos_id is not None and ids[:1] != [tok.bos_id]:
        ids = [tok.bos_id] + ids
    return ids


def stream_generate(
    model: Any,
    tokenizer: Any,
    prompt: str | Sequence[int] | mx.array,
    *,
    draft_model: Any = None,
    draft_tokenizer: Any = None,
    translator: str = "context",
    k: int = 2,
    max_tokens: int = 256,
    sampler: Callable[[mx.array], mx.array] | None = None,
    draft_prompt: str | Sequence[int] | None = None,
    **options: Any,
) -> Iterator[GenerationResponse]:
    """Yield one :class:`GenerationResponse` per generated token, drafting with ``draft_model``.

    ``tokenizer`` / ``draft_tokenizer``: mlx-lm ``TokenizerWrapper`` or specfw
    tokenizers; a missing ``draft_tokenizer`` means the target's. ``prompt``:
    text (special-token strings are parsed, as mlx-lm does) or target ids.
    ``draft_prompt``: what the drafter sees instead of the prompt's text (for
    example the same chat in the drafter's own template). ``max_tokens``: -1
    for up to the target's context. ``sampler``: an mlx-lm sampler (e.g.
    ``mlx_lm.sample_utils.make_sampler(temp=0.7)``); None is greedy.
    ``options``: any other :class:`~specfw.config.RunConfig` field
    (``k_policy``, ``cache_sync``, ``drafter``, ``prefix_window``, ...).
    Without ``draft_model`` the target runs alone (unless ``drafter`` needs no model).
    """
    run = prompt_run(model, tokenizer, prompt, draft_model=draft_model, draft_tokenizer=draft_tokenizer,
                     translator=translator, k=k, max_tokens=max_tokens, sampler=sampler, draft_prompt=draft_prompt,
                     **options)
    stop_ids = run.target_side.stop_ids
    run.target_side.stop_ids = frozenset()  # end tokens are caught below, to end as mlx-lm does
    yield from _responses(run, stop_ids, run.config.max_tokens)


def prompt_run(
    model: Any,
    tokenizer: Any,
    prompt: str | Sequence[int] | mx.array,
    *,
    draft_model: Any = None,
    draft_tokenizer: Any = None,
    translator: str = "context",
    k: int = 2,
    max_tokens: int = 256,
    sampler: Callable[[mx.array], mx.array] | None = None,
    draft_prompt: str | Sequence[int] | None = None,
    **options: Any,
) -> PromptRun:
    """The :class:`PromptRun` that :func:`stream_generate` runs for these arguments (same meanings).

    Its target side stops at the mlx-lm tokenizer's ``eos_token_ids`` (else specfw's end ids).
    """
    if max_tokens == 0:
        raise ValueError("max_tokens must be non-zero (use -1 for no limit)")
    target_tok = as_specfw_tokenizer(tokenizer)
    target = _as_loaded(model, target_tok, "target")
    target_ids = encode_prompt(prompt, target_tok)
    prompt_text = prompt if isinstance(prompt, str) else target_tok.decode(target_ids, at_start=True)
    draft = draft_ids = None
    if draft_model is not None:
        draft_tok = as_specfw_tokenizer(draft_tokenizer) if draft_tokenizer is not None else target_tok
        draft = _as_loaded(draft_model, draft_tok, "draft")
        if draft_prompt is not None:
            draft_ids = encode_prompt(draft_prompt, draft_tok)
        elif same_vocabulary(draft_tok, target_tok):
            draft_ids = list(target_ids)
        else:
            draft_ids = encode_prompt(prompt_text, draft_tok)
    room = (target.context_length or len(target_ids) + max(max_tokens, 1)) - len(target_ids)
    limit = room if max_tokens < 0 else min(max_tokens, room)
    drafter = options.get("drafter", "mlx")
    config = RunConfig(
        prompt=prompt_text if prompt_text.strip() else "(token ids)",  # a label: the ids are given
        translator=translator,
        k=k,
        max_tokens=max(1, limit),
        baseline=draft_model is None and drafter == "mlx",
        **options,
    )
    run = PromptRun(config, target_ids, draft_ids, target=target, draft=draft)
    run.target_side.stop_ids = _stop_ids(tokenizer, target_tok)
    if sampler is not None:
        run.target_side.verifier = SamplerVerifier(sampler)
    return run


@dataclass
class BatchResponse:
    """What :func:`batch_generate` returns, in prompt order (as mlx-lm's ``BatchResponse``, plus specfw's results).

    ``texts``: each generation's text ("" where it failed); ``token_ids``: its
    ids when asked for (``return_token_ids``); ``results``: its
    :class:`~specfw.run.RunResult` (None where it failed); ``errors``: the
    exception it failed with, else None. ``generation_tokens`` / ``wall_s`` /
    ``generation_tps``: all generations' tokens, the whole call's seconds
    (prefills included) and their ratio.
    """

    texts: list[str]
    token_ids: list[list[int]] | None
    results: list[Any]
    errors: list[BaseException | None]
    generation_tokens: int
    wall_s: float
    generation_tps: float
    peak_memory: float


def batch_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[int] | mx.array],
    *,
    max_tokens: int | Sequence[int] = 128,
    max_batch: int | None = None,
    requests: Sequence[dict[str, Any]] | None = None,
    return_token_ids: bool = False,
    verbose: bool = False,
    **options: Any,
) -> BatchResponse:
    """Generate for every prompt, up to ``max_batch`` at a time sharing each target pass (:mod:`specfw.batch`).

    mlx-lm's shape: the target ``model`` and ``tokenizer``, a list of prompts
    (text or ids), ``max_tokens`` one for all or one per prompt. ``options``
    are :func:`stream_generate`'s (``draft_model``, ``draft_tokenizer``,
    ``translator``, ``k``, ``sampler``, and any :class:`~specfw.config.RunConfig`
    field) for every prompt; ``requests[i]`` overrides them for prompt i (its
    own drafter, translator, k, k policy, temperature, seed, ...). Each
    generation stops at the tokenizer's end ids and gives the ids it gives
    alone (greedy; sampling with the same seed). A generation that fails
    leaves its error in ``errors`` and the others go on.
    """
    from specfw.batch import DEFAULT_MAX_BATCH, generate_runs

    count = len(prompts)
    limits = [max_tokens] * count if isinstance(max_tokens, int) else list(max_tokens)
    overrides = list(requests) if requests is not None else [{}] * count
    if len(limits) != count or len(overrides) != count:
        raise ValueError("max_tokens and requests need one entry per prompt")
    start = time.perf_counter()
    runs = [prompt_run(model, tokenizer, prompt, **{"max_tokens": limit, **options, **override})
            for prompt, limit, override in zip(prompts, limits, overrides)]
    outcomes = generate_runs(runs, max_batch or DEFAULT_MAX_BATCH)
    wall = time.perf_counter() - start
    results = [None if isinstance(o, BaseException) else o for o in outcomes]
    generated = sum(len(r.token_ids) for r in results if r is not None)
    response = BatchResponse(
        texts=[r.text if r is not None else "" for r in results],
        token_ids=[r.token_ids if r is not None else [] for r in results] if return_token_ids else None,
        results=results,
        errors=[o if isinstance(o, BaseException) else None for o in outcomes],
        generation_tokens=generated,
        wall_s=wall,
        generation_tps=generated / max(wall, 1e-9),
        peak_memory=mx.get_peak_memory() / 1e9,
    )
    if verbose:
        print(f"specfw: {count} prompts, {generated} tokens in {wall:.2f} s ({response.generation_tps:.1f} tok/s), "
              f"{sum(e is not None for e in response.errors)} failed")
    return response


def _responses(run: Run, stop_ids: frozenset[int], max_tokens: int) -> Iterator[GenerationResponse]:
    tok = run.target.tokenizer
    n_prompt = len(run.target_side.prompt_ids)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    start = time.perf_counter()
    first = prompt_tps = None
    tokens = run.stream()
    try:
        for token in tokens:
            if token.id < 0:
                continue  # the scheduler's UTF-8 flush; decoded here instead
            now, stats = time.perf_counter(), run.stats  # stream() starts a fresh RunStats
            if first is None:
                first, prompt_tps = now, n_prompt / max(now - start, 1e-9)
            generated = stats.generated
            stop = token.id in stop_ids
            last = stop or generated >= max_tokens
            text = decoder.decode(b"" if stop else tok.token_bytes(token.id), final=last)
            yield GenerationResponse(
                text=text,
                token=token.id,
                logprobs=None,
                from_draft=token.from_draft,
                prompt_tokens=n_prompt,
                prompt_tps=prompt_tps,
                generation_tokens=generated,
                generation_tps=generated / max(now - first, 1e-9) if generated > 1 else 0.0,
                peak_memory=mx.get_peak_memory() / 1e9,
                finish_reason=("stop" if stop else "length") if last else None,
                proposed=stats.proposed,
                accepted=stats.accepted,
                verified_accepted=stats.verified_accepted,
                acceptance_rate=stats.acceptance_rate,
                cycles=stats.cycles,
            )
            if last:
                return
    finally:
        tokens.close()


def _generate_text(model: Any, tokenizer: Any, prompt: str | Sequence[int] | mx.array, *, verbose: bool = False,
                   **kwargs: Any) -> str:
    text, response = [], None
    for response in stream_generate(model, tokenizer, prompt, **kwargs):
        text.append(response.text)
        if verbose:
            print(response.text, end="", flush=True)
    if verbose and response is not None:
        print(f"\nspecfw: prompt {response.prompt_tokens} tok {response.prompt_tps:.1f} tok/s | "
              f"generated {response.generation_tokens} tok {response.generation_tps:.1f} tok/s | "
              f"acceptance {response.acceptance_rate:.1%} ({response.accepted}/{response.proposed})")
    return "".join(text)


def generate(first: Any, *args: Any, **kwargs: Any):
    """``generate(config)`` → :class:`~specfw.run.RunResult` (as before), or, mlx-lm style,
    ``generate(model, tokenizer, prompt, verbose=False, **stream_generate_options)`` → the text."""
    if isinstance(first, RunConfig):
        from specfw.run import generate as run_generate

        return run_generate(first, *args, **kwargs)
    return _generate_text(first, *args, **kwargs)


__all__ = ["BatchResponse", "GenerationResponse", "PromptRun", "batch_generate", "SamplerVerifier", "as_specfw_tokenizer", "encode_prompt", "generate",
           "load", "prompt_run", "stream_generate"]
