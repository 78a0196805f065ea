"""specfw.blas: which BLAS MLX ends up with, and the one-line hint on the reference BLAS.

Each case runs in a fresh interpreter (the BLAS is chosen once per process,
before MLX is imported). The hint is only written to a terminal, so those
cases give the child a pseudo-terminal as stderr.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

import specfw.blas
from specfw.blas import CANDIDATES, HINT, _find_mkl

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload and its hint are Linux-only")
HINT_START = HINT.split("{")[0]  # "specfw: note: MLX runs on the reference BLAS"
MISSING = "/nonexistent/libopenblas.so.0"


def _python(code: str, env: dict, terminal: bool) -> tuple[str, str]:
    """Run ``code`` in a fresh interpreter; return (stdout, stderr), stderr through a pseudo-terminal if asked."""
    full_env = {**os.environ, **env}
    if not terminal:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, proc.stderr
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=follower, text=True,
                              env=full_env, timeout=300)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal is closed once everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    err = b"".join(chunks).decode("utf-8", errors="replace")
    assert proc.returncode == 0, err
    return proc.stdout, err


CHOOSE_TWICE = "import specfw, specfw.blas as b; b.load_optimized_blas(); print(b.load_optimized_blas())"


@linux_only
def test_reference_blas_gives_one_hint_on_a_terminal():
    out, err = _python(CHOOSE_TWICE + "; import specfw.run", {"SPECFW_BLAS": MISSING}, terminal=True)
    assert out.startswith("reference") and MISSING in out
    assert err.count(HINT_START) == 1, err
    assert "apt-get install libopenblas0-pthread" in err and "specfw[fastblas]" in err


@linux_only
def test_no_hint_when_the_reference_blas_was_chosen():
    out, err = _python(CHOOSE_TWICE, {"SPECFW_BLAS": "reference"}, terminal=True)
    assert out.strip() == "reference (SPECFW_BLAS=reference)"
    assert HINT_START not in err


@linux_only
def test_no_hint_when_stderr_is_captured():
    out, err = _python(CHOOSE_TWICE, {"SPECFW_BLAS": MISSING}, terminal=False)
    assert out.startswith("reference")
    assert err == ""


def test_no_hint_and_no_preload_on_macos():
    # blas.py alone (stdlib only), since the rest of Python's startup on Linux cannot pass for macOS
    code = (
        "import sys, importlib.util; sys.platform = 'darwin'\n"
        f"spec = importlib.util.spec_from_file_location('blas', {specfw.blas.__file__!r})\n"
        "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)\n"
        "b.load_optimized_blas(); print(b.load_optimized_blas())"
    )
    out, err = _python(code, {"SPECFW_BLAS": MISSING}, terminal=sys.platform.startswith("linux"))
    assert out.strip() == "Accelerate (macOS)"
    assert HINT_START not in err


@linux_only
def test_system_openblas_takes_over_mlx_matrix_products():
    if not any(os.path.exists(path) for path in CANDIDATES):
        pytest.skip("no system OpenBLAS (apt-get install libopenblas0-pthread)")
    code = (
        "import specfw, specfw.blas as b; import mlx.core as mx, numpy as np\n"
        "a = np.arange(64 * 48, dtype=np.float32).reshape(64, 48) / 1000; c = np.ones((48, 32), np.float32)\n"
        "assert np.allclose(np.array(mx.array(a) @ mx.array(c)), a @ c, rtol=1e-5)\n"
        "print(b.blas_in_use()); print(any('openblas' in line for line in open('/proc/self/maps')))"
    )
    out, err = _python(code, {"SPECFW_BLAS": "openblas"}, terminal=False)
    desc, mapped = out.split()[0], out.split()[-1]
    assert desc == "openblas" and mapped == "True", out + err


def test_mkl_from_the_environment_is_found(tmp_path, monkeypatch):
    """The mkl wheel installs libmkl_rt into <environment>/lib; the finder looks there."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libmkl_rt.so.3").write_bytes(b"")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert _find_mkl() == str(tmp_path / "lib" / "libmkl_rt.so.3")


@linux_only
def test_a_library_that_does_not_load_leaves_the_reference_blas(tmp_path):
    broken = tmp_path / "libopenblas.so.0"
    broken.write_bytes(b"not an ELF file")
    out, _ = _python(CHOOSE_TWICE, {"SPECFW_BLAS": str(broken)}, terminal=False)
    assert out.startswith("reference (could not load") and str(broken) in out
