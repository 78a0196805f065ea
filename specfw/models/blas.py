"""Load an optimized BLAS before MLX, where one is installed (Linux).

The mlx-cpu wheel for Linux links a reference BLAS, 25-50x slower for matrix
products than OpenBLAS or MKL. MLX calls the plain CBLAS/LAPACK symbols
(``cblas_sgemm``, ``sgetrf_``, ..., 32-bit integers), so a library exporting
them that is loaded into the global symbol scope *before* MLX is imported
takes over MLX's calls. On macOS MLX uses Accelerate and nothing is done.

``SPECFW_BLAS`` chooses:

* ``auto`` (default): the system's OpenBLAS (``apt-get install
  libopenblas0-pthread``), else Intel MKL from the ``mkl`` wheel (a default
  dependency on Linux x86-64, so a plain ``pip install`` brings it), else the
  reference BLAS;
* ``openblas`` or ``mkl``: only that one;
* ``reference``: keep the wheel's own BLAS, on purpose;
* a path to a BLAS shared library.

When the reference BLAS ends up in use on Linux without ``reference`` being
asked for, one line on stderr (once per process, only when stderr is a
terminal, so piped output and test captures stay clean) gives the command
that gets a fast one: on x86-64 ``<this python> -m pip install 'mkl>=2024'``
(no root) or the system's OpenBLAS, elsewhere the system's OpenBLAS.
:func:`blas_in_use` describes the BLAS for the statistics line; its first
word names the library MLX's ``cblas_sgemm`` binds to (tests/test_blas.py
checks that with the dynamic linker's own record).

Measured on a 2-core AMD EPYC (docs/results/blas-cpu): MKL and OpenBLAS both
beat the reference BLAS several times over on the default pair's decode, and
MKL beat OpenBLAS there; OpenBLAS still comes first in ``auto`` because a
system library the user installed is their choice (``SPECFW_BLAS=mkl`` picks
MKL where both are present).

Wheels checked and not used: ``scipy-openblas32`` and ``scipy-openblas64``
export only ``scipy_``-prefixed symbols (``scipy_cblas_sgemm``; the 64 one
also has 64-bit integers), which MLX never calls; ``cmeel-openblas`` exports
the plain symbols but needs the system's ``libgfortran.so.5`` and is built
for one CPU (SKYLAKEX, no runtime dispatch), and ran 8x slower than Debian's
OpenBLAS here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import shlex
import sys
from pathlib import Path

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)
# The mkl and intel-openmp wheels put their libraries in <environment>/lib.
MKL_NAMES = ("libmkl_rt.so.3", "libmkl_rt.so.2")
OPENMP_NAME = "libiomp5.so"

HINT = (
    "specfw: note: MLX runs on the reference BLAS{why}, several times slower on CPU. For a fast one, run: "
    "{fix}; SPECFW_BLAS=reference silences this."
)
FIX_OPENBLAS = "sudo apt-get install libopenblas0-pthread"
# The mkl wheel exists for Linux x86-64 only; pip of this very interpreter, so it lands in this environment.
FIX_MKL = "{python} -m pip install 'mkl>=2024' (Intel MKL, ~320 MB, no root)"


def hint_fix(machine: str | None = None) -> str:
    """The command(s) the reference-BLAS note gives on this machine (``machine`` as in ``platform.machine()``)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        return f"{FIX_MKL.format(python=shlex.quote(sys.executable or 'python3'))}, or {FIX_OPENBLAS}"
    return FIX_OPENBLAS

_state: dict[str, str] = {}


def _find_openblas() -> str | None:
    for candidate in CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return ctypes.util.find_library("openblas")


def _find_mkl() -> str | None:
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for name in MKL_NAMES:
            if (Path(prefix) / "lib" / name).exists():
                return str(Path(prefix) / "lib" / name)
    return None


def _load(library: str) -> None:
    """Load ``library`` into the global scope; MKL first gets the OpenMP runtime its threading layer needs."""
    if Path(library).name.startswith("libmkl_rt"):
        openmp = Path(library).with_name(OPENMP_NAME)
        if openmp.exists():
            ctypes.CDLL(str(openmp), mode=ctypes.RTLD_GLOBAL)
        else:
            os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")  # intel-openmp missing: no threads rather than a crash
    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)


def _kind(library: str) -> str:
    return "mkl" if "mkl" in Path(library).name else "openblas" if "openblas" in Path(library).name else "blas"


def _choose(setting: str) -> str:
    """Load the BLAS that ``setting`` asks for and describe it (first word: openblas, mkl, blas or reference)."""
    if setting == "reference":
        return "reference (SPECFW_BLAS=reference)"
    if "mlx.core" in sys.modules:
        return "reference (MLX was imported before specfw; import specfw first to use OpenBLAS)"
    finders = {"auto": (_find_openblas, _find_mkl), "openblas": (_find_openblas,), "mkl": (_find_mkl,)}
    if setting in finders:
        found = [library for library in (find() for find in finders[setting]) if library]
        if not found:
            return f"reference (no {'optimized BLAS' if setting == 'auto' else setting} found)"
    else:
        found = [setting]
    errors = []
    for library in found:
        try:
            _load(library)
            return f"{_kind(library)} ({library})"
        except OSError as exc:
            errors.append(f"could not load {exc}")
    return f"reference ({'; '.join(errors)})"


def load_optimized_blas() -> str:
    """Load an optimized BLAS globally if allowed and possible; return a description of the BLAS in use.

    Runs once per process (later calls return the first answer); on Linux it
    prints :data:`HINT` to a terminal's stderr when the reference BLAS is left
    in use without ``SPECFW_BLAS=reference``.
    """
    if "blas" in _state:
        return _state["blas"]
    setting = os.environ.get("SPECFW_BLAS", "auto").strip() or "auto"
    desc = "Accelerate (macOS)" if sys.platform == "darwin" else _choose(setting)
    _state["blas"] = desc
    if sys.platform.startswith("linux") and desc.startswith("reference") and setting != "reference":
        if sys.stderr is not None and sys.stderr.isatty():
            why = desc[len("reference"):].strip()
            print(HINT.format(why=f" {why}" if why else "", fix=hint_fix()), file=sys.stderr)
    return desc


def blas_in_use() -> str:
    return _state.get("blas") or load_optimized_blas()
