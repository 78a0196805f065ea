"""Composing a run from a :class:`~specfw.config.RunConfig`: the public entry points.

``generate(config)`` runs to the end and returns a :class:`RunResult`;
``Run(config).stream()`` yields :class:`~specfw.scheduler.Token` as they come.
Both load the models (or take already loaded ones), pick the plugins from the
registry, and hand them to :func:`specfw.scheduler.speculative_stream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from specfw.models.blas import blas_in_use
from specfw.config import RunConfig
from specfw.models.emulation import emulated_shape, emulation_of, shadowed
from specfw.errors import ConfigError, PluginError, SpecfwError
from specfw.models.loading import LoadedModel, load_model, model_path
from specfw.plugins import Registry, get_registry
from specfw.models.prompt_cache import PromptCache
from specfw.protocols import CacheSyncSetup, DrafterSetup, KPolicySetup, TranslatorSetup, VerifierSetup
from specfw.scheduler import DraftSide, Steps, TargetSide, Token, speculative_stream, speculative_steps
from specfw.stats import RunStats
from specfw.models.catalog import load_tokenizer
from specfw.tokenizers import Tokenizer, same_vocabulary


@dataclass
class RunResult:
    """The output of one run: text, target ids, and what it cost."""

    config: RunConfig
    target: str
    draft: str | None
    translator_used: str | None
    text: str
    token_ids: list[int]
    from_draft: list[bool]
    stats: RunStats
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        c = self.config
        return {
            "target": self.target,
            "emulated_target": emulated_shape(self.target),
            "draft": self.draft,
            "drafter": None if c.baseline else c.drafter,
            "translator": None if c.baseline else c.translator,
            "translator_used": self.translator_used,
            "k": None if c.baseline else c.k,
            "k_policy": None if c.baseline else c.k_policy,
            "cache_sync": c.cache_sync,
            "verifier": c.verifier_name,
            "prefix_window": c.prefix_window,
            "baseline": c.baseline,
            "chat": c.chat,
            "temp": c.temp,
            "seed": c.seed,
            "text": self.text,
            "token_ids": self.token_ids,
            **{k: v for k, v in self.stats.as_dict().items()},
            "blas": blas_in_use(),
            "notes": self.notes,
        }


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids a model sees for ``prompt``: BOS where the tokenizer adds one, then the text."""
    ids = tokenizer.encode(prompt)
    if tokenizer.add_bos and tokenizer.bos_id is not None:
        ids = [tokenizer.bos_id] + ids
    return ids


def draft_prompt_ids(draft: Tokenizer, target: Tokenizer, prompt: str, prefix: str | None = None) -> list[int]:
    """The drafter's prompt: ``prefix`` + ``prompt`` in the draft vocabulary (BOS where the draft tokenizer adds one).

    ``prefix`` None: the text of the target's BOS token when the target adds
    one and the draft tokenizer does not, so the drafter's context starts as
    the target's does, in words (the paper's implementation decodes the
    target's prompt ids, BOS included, for its drafter). On the default pair
    this raised accepted ids per target pass on every prompt tried or left it
    equal (see docs/plugins.md). Only the drafter's context changes: the target's
    prompt, and so the output, does not.
    """
    if prefix is None:
        prefix = ""
        if target.add_bos and target.bos_id is not None and not (draft.add_bos and draft.bos_id is not None):
            names = {i: text for text, i in getattr(target, "special_ids", {}).items()}
            prefix = names.get(target.bos_id, "")
    return prompt_ids(draft, prefix + prompt)


class Run:
    """One generation: plugins composed from ``config``, models loaded or given.

    ``target`` / ``draft`` may be passed already loaded (tests, notebooks,
    the eval loop reusing models); otherwise they are loaded from the config,
    and with neither ``config.target`` nor ``config.draft`` the default pair is used.
    """

    def __init__(
        self,
        config: RunConfig,
        target: LoadedModel | None = None,
        draft: LoadedModel | None = None,
        registry: Registry | None = None,
        log=None,
    ) -> None:
        self.config = config
        self.log = log
        self.registry = registry or get_registry()
        self.notes: list[str] = []
        self.stats = RunStats()
        self.translator_used: str | None = None
        # Look every plugin up before loading models, so a typo fails fast.
        self.plugin_classes = {
            "verifier": self.registry.get("verifier", config.verifier_name).cls,
            "cache_sync": self.registry.get("cache_sync", config.cache_sync).cls,
        }
        if not config.baseline:
            self.plugin_classes["drafter"] = self.registry.get("drafter", config.drafter).cls
            self.plugin_classes["translator"] = self.registry.get("translator", config.translator).cls
            self.plugin_classes["k_policy"] = self.registry.get("k_policy", config.k_policy).cls
        self.target, self.draft = self._load_models(target, draft)
        self.target_side = self._target_side()
        self.draft_side = None if config.baseline else self._draft_side()

    # -- composition -------------------------------------------------------

    def _load_models(self, target: LoadedModel | None, draft: LoadedModel | None):
        c = self.config
        needs_draft_model = not c.baseline and self.plugin_classes["drafter"].needs_model
        if target is None and c.target is None:
            if c.draft is not None:
                raise ConfigError("--draft needs --target too (or neither, for the default pair)")
            from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET

            if needs_draft_model or c.baseline:
                self.notes.append(f"default pair: target {DEFAULT_TARGET}, drafter {DEFAULT_DRAFT}")
                c = c.model_copy(update={"target": DEFAULT_TARGET, "draft": DEFAULT_DRAFT})
            else:  # a model-free drafter (lookup) drafts in the target's own vocabulary
                self.notes.append(f"default target {DEFAULT_TARGET}; drafter '{c.drafter}' needs no draft model")
                c = c.model_copy(update={"target": DEFAULT_TARGET})
        if target is None:
            target = load_model(c.target, log=self.log)
        if c.emulate_target is not None and emulation_of(target.model) is None:
            target = shadowed(target, c.emulate_target)
        if emulation_of(target.model) is not None:
            self.notes.append(f"emulated target {target.source}: the text is the real target's, each pass also runs "
                              f"a random-weight {emulation_of(target.model)}-shaped model (a study tool)")
        if needs_draft_model and draft is None:
            if c.draft is None:
                raise ConfigError(f"drafter '{c.drafter}' needs --draft MODEL (or use --baseline)")
            draft = load_model(c.draft, log=self.log)
        for loaded in (target, draft):
            if loaded is not None and loaded.source.startswith("tiny-random"):
                self.notes.append(f"{loaded.source} has random weights: its text is gibberish")
        self.config = c
        return target, draft

    def _prompt_ids(self, loaded: LoadedModel | None, tokenizer: Tokenizer) -> list[int]:
        if not self.config.chat:
            return prompt_ids(tokenizer, self.config.prompt)
        from specfw.chat import chat_prompt_ids

        if loaded is None:
            raise ConfigError("--chat needs a draft model folder with a chat template")
        return chat_prompt_ids(loaded.path, tokenizer, self.config.prompt, loaded.source)

    def _draft_prompt_ids(self, draft_tok: Tokenizer, same_ids: bool) -> list[int]:
        """The drafter's prompt ids: the draft model's chat template, or ``config.draft_prompt_prefix`` + the prompt."""
        c = self.config
        if self.draft is None:  # a model-free drafter: no context to prime
            return prompt_ids(draft_tok, c.prompt)
        if c.chat:
            return self._prompt_ids(self.draft, draft_tok)
        return draft_prompt_ids(draft_tok, self.target.tokenizer, c.prompt, "" if same_ids else c.draft_prompt_prefix)

    def _target_side(self) -> TargetSide:
        c, tok = self.config, self.target.tokenizer
        ids = self._prompt_ids(self.target, tok)
        limit = self.target.context_length
        if limit is not None and len(ids) >= limit:
            raise ConfigError(f"the prompt is {len(ids)} tokens, longer than the target's context of {limit}")
        return TargetSide(
            model=self.target.model,
            tokenizer=tok,
            prompt_ids=ids,
            verifier=_build(self.plugin_classes["verifier"], VerifierSetup(c, *self._vocab_bytes())),
            cache_sync=self.plugin_classes["cache_sync"](CacheSyncSetup(c)),
            stop_ids=frozenset(tok.eos_ids),
        )

    def _vocab_bytes(self) -> tuple[list[bytes] | None, list[bytes] | None]:
        """What every draft and target id spells, for a verifier that verifies strings (``wants_draft_strings``)."""
        if self.config.baseline or not getattr(self.plugin_classes["verifier"], "wants_draft_strings", False):
            return None, None
        if self.draft is not None:
            draft_tok = self.draft.tokenizer
        elif self.config.draft is not None:
            draft_tok = load_tokenizer(self.config.draft)
        else:
            draft_tok = self.target.tokenizer
        target_tok = self.target.tokenizer
        return ([draft_tok.token_bytes(i) for i in range(draft_tok.vocab_size)],
                [target_tok.token_bytes(i) for i in range(target_tok.vocab_size)])

    def _draft_side(self) -> DraftSide:
        c = self.config
        drafter_cls = self.plugin_classes["drafter"]
        if self.draft is not None:
            draft_tok = self.draft.tokenizer
        elif c.draft is not None:  # a model-free drafter in the draft model's vocabulary: its tokenizer only
            from specfw.models.catalog import KNOWN_MODELS

            draft_tok = load_tokenizer(model_path(c.draft, log=self.log) if c.draft in KNOWN_MODELS else c.draft)
        else:
            draft_tok = self.target.tokenizer
        translator_cls = self.plugin_classes["translator"]
        if same_vocabulary(draft_tok, self.target.tokenizer):
            translator_cls = self.registry.get("translator", "identity").cls
            if c.translator != "identity":
                self.notes.append(f"same tokenizer on both sides: translator '{c.translator}' replaced by 'identity'")
        self.translator_used = translator_cls.name
        _check_options(self.plugin_classes["translator"], c.translator_options, "translator")
        translator = _build(translator_cls, TranslatorSetup(draft_tok, self.target.tokenizer, c))
        # Verification with the draft's probabilities: a verifier that wants them, a translator that maps them,
        # and sampling (at temp 0 every verifier is exact match on the argmax).
        draft_probs = (
            c.temp > 0
            and getattr(self.plugin_classes["verifier"], "wants_draft_probs", False)
            and callable(getattr(translator, "to_target_probs", None))
        )
        # A string-level verifier (slrs) needs the distributions the proposals were drawn from, in draft ids.
        draft_strings = c.temp > 0 and getattr(self.plugin_classes["verifier"], "wants_draft_strings", False)
        draft_model = self.draft.model if self.draft else None
        _check_options(drafter_cls, c.drafter_options)
        drafter_options = dict(c.drafter_options)
        verifier_draft_temp = getattr(self.plugin_classes["verifier"], "draft_temp", None)
        if (draft_probs or draft_strings) and verifier_draft_temp and "temp" not in drafter_options \
                and "temp" in (getattr(drafter_cls, "option_names", None) or ()):
            # the verifier names the drafter temperature it works best with; an explicit option wins
            drafter_options["temp"] = str(min(c.temp, verifier_draft_temp))
        drafter = _build(
            drafter_cls,
            DrafterSetup(c, draft_model, draft_tok.vocab_size, drafter_options, sample=draft_probs or draft_strings,
                         target_vocab_size=self.target.tokenizer.vocab_size, tokenizer=draft_tok,
                         target_tokenizer=self.target.tokenizer),
        )
        allowed = None
        if callable(getattr(translator, "allowed_mask", None)):
            allowed = translator.allowed_mask(_logits_width(draft_model, draft_tok))
        draft_ids = self._draft_prompt_ids(draft_tok, same_ids=translator_cls.name == "identity")
        pair = "|".join(str(part) for part in (
            self.target.source, self.draft.source if self.draft else c.draft, c.drafter, translator_cls.name,
            c.verifier_name, c.cache_sync, c.prefix_window, c.temp, sorted(drafter_options.items()),
            sorted(c.translator_options.items())))
        from specfw.priors import draft_cost_hint

        draft_cost = 0.0 if draft_model is None or not drafter_cls.needs_model else draft_cost_hint(
            self.target.model, draft_model)
        k_policy = _build(self.plugin_classes["k_policy"],
                          KPolicySetup(c, pair=pair, priors=c.priors, draft_cost=draft_cost))
        if getattr(k_policy, "note", None):
            self.notes.append(k_policy.note)
        return DraftSide(drafter, translator, draft_tok, draft_ids, c.k, allowed=allowed, draft_probs=draft_probs,
                         k_policy=k_policy, ahead=c.draft_ahead)

    # -- running -----------------------------------------------------------

    def stream(self, prompt_cache: PromptCache | None = None) -> Iterator[Token]:
        """Yield generated tokens; ``self.stats`` is complete once the generator ends.

        ``prompt_cache``: KV caches kept from an earlier generation on the same models (the server's chat
        follow-ups); the prompt prefix they hold is not forwarded again.
        """
        self.stats = RunStats()
        yield from speculative_stream(self.target_side, self.draft_side, self._max_tokens(), self.stats, prompt_cache)

    def steps(self, prompt_cache: PromptCache | None = None, overlap: bool = False) -> Steps:
        """This generation as a :func:`~specfw.scheduler.speculative_steps` coroutine, for a driver that answers
        its target forward requests itself (:mod:`specfw.batch`: many generations in one pass). As :meth:`stream`,
        it starts a fresh ``self.stats``. ``overlap``: a plain step's forward may be requested on a lazy id
        (see :func:`~specfw.scheduler.speculative_steps`); the server uses it while a request decodes alone."""
        self.stats = RunStats()
        return speculative_steps(self.target_side, self.draft_side, self._max_tokens(), self.stats, prompt_cache,
                                 overlap=overlap)

    def _max_tokens(self) -> int:
        """``config.max_tokens``, capped by what the target's context leaves after the prompt."""
        limit = self.target.context_length
        max_tokens = self.config.max_tokens
        if limit is not None:
            max_tokens = min(max_tokens, limit - len(self.target_side.prompt_ids))
        return max_tokens

    def result(self) -> RunResult:
        return self.result_of(list(self.stream()))

    def result_of(self, tokens: list[Token]) -> RunResult:
        """The :class:`RunResult` of the ``tokens`` this run generated (by :meth:`stream` or :meth:`steps`)."""
        ids = [t for t in tokens if t.id >= 0]
        return RunResult(
            config=self.config,
            target=self.target.source,
            draft=None if self.config.baseline else (self.draft.source if self.draft else self.config.draft),
            translator_used=self.translator_used,
            text="".join(t.text for t in tokens),
            token_ids=[t.id for t in ids],
            from_draft=[t.from_draft for t in ids],
            stats=self.stats,
            notes=list(self.notes),
        )


def _logits_width(model, tokenizer: Tokenizer) -> int:
    """How many logits the draft model produces (its embedding may be padded past the tokenizer's ids)."""
    width = getattr(getattr(model, "args", None), "vocab_size", None)  # mlx-lm models keep their ModelArgs
    return width if isinstance(width, int) and width > 0 else tokenizer.vocab_size


def _check_options(cls: type, options: dict, kind: str = "drafter") -> None:
    """Refuse an option the plugin (or no part of a combined drafter) does not take.

    Only plugins that declare ``option_names`` are checked (third-party ones may not).
    """
    names = getattr(cls, "option_names", None)
    if names is None:
        return
    for key in options:
        if key not in names:
            takes = f"it takes {', '.join(names)}" if names else "it takes none"
            raise ConfigError(f"{kind} '{cls.name}' has no option '{key}'; {takes}")


def _build(cls: type, setup):
    """Instantiate a plugin, naming it and its module in any error it raises."""
    try:
        return cls(setup)
    except SpecfwError:
        raise
    except Exception as exc:
        raise PluginError(f"{cls.name} ({cls.__module__}) failed to start: {type(exc).__name__}: {exc}") from None


def generate(config: RunConfig, target: LoadedModel | None = None, draft: LoadedModel | None = None) -> RunResult:
    """Run ``config`` to the end and return the result."""
    return Run(config, target=target, draft=draft).result()
