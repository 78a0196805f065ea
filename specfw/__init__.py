"""specfw: speculative decoding on MLX where draft and target may use different tokenizers.

Library use::

    from specfw import RunConfig, generate
    result = generate(RunConfig(prompt="Stolicą Polski jest", translator="context", k=2))
    print(result.text, result.stats.acceptance_rate)

``Run(config).stream()`` yields tokens as they are produced. mlx-lm style::

    from mlx_lm import load
    from specfw import stream_generate
    model, tokenizer = load("path/to/target"); draft, draft_tokenizer = load("path/to/drafter")
    for r in stream_generate(model, tokenizer, "Hello", draft_model=draft, draft_tokenizer=draft_tokenizer):
        print(r.text, end="")

``generate(config)`` returns a ``RunResult``; ``generate(model, tokenizer, prompt, ...)`` returns the text.
``batch_generate(model, tokenizer, prompts, ...)`` decodes several prompts together, sharing each target pass
(:mod:`specfw.batch`), each as it would alone.
"""

from specfw.models.blas import load_optimized_blas

load_optimized_blas()  # must run before MLX is first imported

from specfw.config import RunConfig  # noqa: E402
from specfw.errors import SpecfwError  # noqa: E402

__all__ = ["RunConfig", "SpecfwError", "Run", "RunResult", "generate", "stream_generate", "load",
           "GenerationResponse", "PromptCache", "batch_generate", "BatchResponse", "BatchEngine"]


def __getattr__(name: str):
    # Lazy: importing specfw (e.g. for plugin discovery) must not import MLX.
    if name in ("Run", "RunResult"):
        from specfw import run

        return getattr(run, name)
    if name in ("generate", "stream_generate", "load", "GenerationResponse", "batch_generate", "BatchResponse"):
        from specfw import api  # generate(config) keeps returning a RunResult; see specfw.api.generate

        return getattr(api, name)
    if name == "BatchEngine":
        from specfw.batch import BatchEngine

        return BatchEngine
    if name == "PromptCache":
        from specfw.models.prompt_cache import PromptCache

        return PromptCache
    raise AttributeError(name)
