"""Run configuration: one pydantic model that the CLI and library users share."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def known_shape(value: Optional[str]) -> Optional[str]:
    """A pydantic check of an ``emulate_target`` shape (``NAME`` or ``NAME:layers=N``)."""
    if value is not None:
        from specfw.models.emulation import parse_shape
        from specfw.errors import ConfigError

        try:
            parse_shape(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


class RunConfig(BaseModel):
    """Everything one generation run needs.

    ``target`` / ``draft``: a known model name, a local model folder or a
    Hugging Face id; None for both selects the default pair. Plugin fields hold registered plugin
    names (``specfw plugins`` lists them). ``verifier`` None picks ``greedy``
    when ``temp`` is 0, else ``speculative`` (the rejection rule with the
    draft's probabilities) for the ``tli`` translator and ``sample`` for the others
    (``slrs``, string-level rejection sampling, is not picked automatically: on
    the default pair it accepts 1.1-2.7x what ``sample`` accepts per cycle but
    its ψ costs a third to a half of a target step, so it is not faster; see docs/lossless.md).
    ``verifier_options`` are settings of the chosen verifier (``slrs``:
    ``branches``, ``min_mass``, ``depth``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    target: Optional[str] = None
    draft: Optional[str] = None
    drafter: str = "mlx"
    drafter_options: dict[str, Any] = Field(default_factory=dict)
    translator: str = "context"
    translator_options: dict[str, Any] = Field(default_factory=dict)
    verifier: Optional[str] = None
    verifier_options: dict[str, Any] = Field(default_factory=dict)
    cache_sync: str = "trim"
    k: int = Field(2, ge=1, le=64, description="draft tokens proposed per cycle (the starting k for 'adaptive')")
    k_policy: str = Field("fixed", description="how k is chosen each cycle: 'fixed' (always k) or 'adaptive'")
    k_max: int = Field(8, ge=1, le=64, description="largest k the 'adaptive' policy may choose")
    draft_ahead: int = Field(0, ge=0, le=64, description="parallel drafting (PEARL-style): ids the drafter drafts "
                             "past each proposal while the target verifies it; 0 turns it off")
    prefix_window: int = Field(4, ge=0, le=256, description="accepted target tokens used as context by 'context' and 'rewind'")
    draft_prompt_prefix: Optional[str] = Field(
        None, description="text put before the prompt in the drafter's context only (the target's prompt is "
        "unchanged); None: the target's BOS text (e.g. '<bos>') when the draft tokenizer adds no BOS of its own "
        "and the target's does, as the paper's implementation does; '': nothing")
    prompt: str = Field(..., description="the prompt text")
    max_tokens: int = Field(128, ge=1)
    temp: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    baseline: bool = False
    chat: bool = False
    emulate_target: Optional[str] = Field(
        None, description="study tool: a shadow model of this shape (e.g. 'llama-3.2-1b', 'mistral-7b:layers=8'; "
        "random weights) is forwarded on every target pass so each pass costs what a larger target's does; "
        "output stays the real target's (see specfw.models.emulation)")
    priors: bool = Field(False, description="the adaptive k policy reads and writes what it learnt in the priors "
                         "file of the model cache (see specfw.priors); the command line sets it (off with "
                         "--no-priors), library use opts in")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        return value

    _known_shape = field_validator("emulate_target")(classmethod(lambda cls, value: known_shape(value)))

    @model_validator(mode="after")
    def _verifier_matches_temperature(self) -> "RunConfig":
        if self.verifier == "greedy" and self.temp > 0:
            raise ValueError("verifier 'greedy' needs --temp 0; use --verifier sample for sampling")
        return self

    @property
    def verifier_name(self) -> str:
        if self.verifier is not None:
            return self.verifier
        if self.temp == 0:
            return "greedy"
        return "speculative" if self.translator == "tli" else "sample"
