"""Models: the known-model store, GGUF import, loading, KV caches, forward passes, the BLAS loader, emulation.

- :mod:`~specfw.models.catalog`: the known model names, mapped to their files and their tokenizers.
- :mod:`~specfw.models.store`: the local model cache: files, checksums, import once, load many times.
- :mod:`~specfw.models.gguf_import`: GGUF → MLX safetensors and tokenizer files, without network.
- :mod:`~specfw.models.embedded`: the tiny random test models built from the tokenizers' packages.
- :mod:`~specfw.models.loading`: load a model folder (or a known name) as a :class:`~specfw.models.loading.LoadedModel`.
- :mod:`~specfw.models.emulation`: an emulated larger target (a shadow model behind the real one).
- :mod:`~specfw.models.kv_cache`, :mod:`~specfw.models.forward`, :mod:`~specfw.models.batch_forward`,
  :mod:`~specfw.models.prompt_cache`: caches and the target and drafter forward passes.
- :mod:`~specfw.models.blas`: loads an optimized BLAS before MLX on Linux.

Nothing is imported here: :mod:`specfw` loads the BLAS (:mod:`specfw.models.blas`) before MLX is first imported.
"""
