"""One condition of the BLAS comparison: time float32 matrix products shaped like the default target's LM head.

Run as ``SPECFW_BLAS=openblas|mkl|reference python matmul.py``; prints one JSON line with the BLAS that
specfw loaded, the time ``load_optimized_blas()`` took (finding and loading the library), and the best time of each product.
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

# specfw.models.blas alone first, to time the load itself (specfw/__init__ would call it on import)
spec = importlib.util.find_spec("specfw.models.blas")
blas = importlib.util.module_from_spec(spec)
sys.modules["specfw.models.blas"] = blas
spec.loader.exec_module(blas)
started = time.perf_counter()
desc = blas.load_optimized_blas()
load_s = time.perf_counter() - started

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

import specfw  # noqa: E402,F401  (the same module object; does not load a second time)

rng = np.random.default_rng(0)
vocab, hidden = 262144, 640
head = rng.standard_normal((vocab, hidden), dtype=np.float32) / 25  # stored like the tied embedding: vocab x hidden
w = mx.array(np.ascontiguousarray(head.T))  # 640 x 262144, as in the brief
w_t = mx.array(head).T  # the model's x @ W.T (a transposed view)
mx.eval(w, w_t)
out = {"blas": desc.split(" ")[0], "library": desc, "load_ms": round(load_s * 1000, 1)}
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
for rows in (1, 8):
    x_np = rng.standard_normal((rows, hidden), dtype=np.float32)
    x = mx.array(x_np)
    for name, weights in (("w", w), ("wT", w_t)):
        mx.eval(x @ weights)  # warm-up
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            y = x @ weights
            mx.eval(y)
            times.append(time.perf_counter() - t)
        out[f"{rows}x{name}_ms"] = round(min(times) * 1000, 2)
    # correctness against numpy (float64 reference)
    ref = x_np.astype(np.float64) @ head.T.astype(np.float64)
    out[f"{rows}_maxrelerr"] = float(np.max(np.abs(np.array(y) - ref)) / np.max(np.abs(ref)))
print(json.dumps(out))
