"""specfw.models.blas: which BLAS MLX ends up with, and the one-line hint on the reference BLAS.

Each case runs in a fresh interpreter (the BLAS is chosen once per process,
before MLX is imported). The hint is only written to a terminal, so those
cases give the child a pseudo-terminal as stderr. Which library MLX's
``cblas_sgemm`` really binds to is read from the dynamic linker's own record
(``LD_DEBUG=bindings``). The MKL cases run where the ``mkl`` wheel is in this
environment (a default dependency on Linux x86-64) and skip elsewhere.
"""

from __future__ import annotations

import os
import platform
import pty
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import specfw.models.blas
from specfw.models.blas import CANDIDATES, FIX_OPENBLAS, HINT, _find_mkl, _find_openblas, hint_fix

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload and its hint are Linux-only")
HINT_START = HINT.split("{")[0]  # "specfw: note: MLX runs on the reference BLAS"
MISSING = "/nonexistent/libopenblas.so.0"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
HAVE_OPENBLAS = any(os.path.exists(path) for path in CANDIDATES)
HAVE_MKL = _find_mkl() is not None


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


CHOOSE_TWICE = "import specfw, specfw.models.blas as b; b.load_optimized_blas(); print(b.load_optimized_blas())"


@linux_only
def test_reference_blas_gives_one_hint_on_a_terminal():
    out, err = _python(CHOOSE_TWICE + "; import specfw.run", {"SPECFW_BLAS": MISSING}, terminal=True)
    assert out.startswith("reference") and MISSING in out
    assert err.count(HINT_START) == 1, err
    assert "sudo apt-get install libopenblas0-pthread" in err
    if X86_64:  # the exact command for this environment's own pip
        assert f"{sys.executable} -m pip install 'mkl>=2024'" in err, err


def test_the_hint_offers_the_mkl_wheel_only_where_it_exists():
    assert f"{sys.executable} -m pip install 'mkl>=2024'" in hint_fix("x86_64")
    assert FIX_OPENBLAS in hint_fix("x86_64")
    assert hint_fix("aarch64") == FIX_OPENBLAS


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
        f"spec = importlib.util.spec_from_file_location('blas', {specfw.models.blas.__file__!r})\n"
        "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)\n"
        "b.load_optimized_blas(); print(b.load_optimized_blas())"
    )
    out, err = _python(code, {"SPECFW_BLAS": MISSING}, terminal=sys.platform.startswith("linux"))
    assert out.strip() == "Accelerate (macOS)"
    assert HINT_START not in err


MATMUL_AND_DESCRIBE = (
    "import specfw, specfw.models.blas as b; import mlx.core as mx, numpy as np\n"
    "a = np.arange(64 * 48, dtype=np.float32).reshape(64, 48) / 1000; c = np.ones((48, 32), np.float32)\n"
    "assert np.allclose(np.array(mx.array(a) @ mx.array(c)), a @ c, rtol=1e-5)\n"
    "print(b.blas_in_use())"
)


def _blas_mlx_binds(setting: str, tmp_path: Path) -> tuple[str, str]:
    """Run a matrix product with SPECFW_BLAS=setting; return (blas_in_use(), the library libmlx's cblas_sgemm bound to)."""
    log = tmp_path / f"ld-{Path(setting).name}"
    out, err = _python(MATMUL_AND_DESCRIBE, {"SPECFW_BLAS": setting, "LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(log)},
                       terminal=False)
    text = "".join(path.read_text(errors="replace") for path in tmp_path.glob(log.name + ".*"))
    bound = re.findall(r"binding file \S*libmlx\S* \[0\] to (\S+) \[0\]: normal symbol `cblas_sgemm'", text)
    assert len(bound) == 1, (out, err, bound)
    return out.strip(), bound[0]


@linux_only
@pytest.mark.parametrize("setting, needed", [("openblas", HAVE_OPENBLAS), ("mkl", HAVE_MKL), ("reference", True)])
def test_the_stats_line_names_the_library_mlx_really_calls(setting, needed, tmp_path):
    if not needed:
        pytest.skip(f"no {setting} here (openblas: apt-get install libopenblas0-pthread; mkl: pip install mkl)")
    desc, bound = _blas_mlx_binds(setting, tmp_path)
    kind = desc.split(" ")[0]  # what the statistics line prints as blas=
    assert kind == setting, desc
    library = os.path.realpath(bound)
    if setting == "reference":
        assert "mlx_cpu.libs" in library and "libblas" in library, library
    else:
        assert setting in Path(library).name and desc == f"{setting} ({bound})", (desc, bound)


@linux_only
def test_auto_prefers_the_system_openblas_then_mkl(tmp_path):
    if not (HAVE_OPENBLAS or HAVE_MKL):
        pytest.skip("neither the system OpenBLAS nor the mkl wheel is here")
    desc, bound = _blas_mlx_binds("auto", tmp_path)
    expected = _find_openblas() if HAVE_OPENBLAS else _find_mkl()
    assert bound == expected and desc.startswith(("openblas " if HAVE_OPENBLAS else "mkl ")), (desc, bound)


def test_the_default_install_brings_mkl_on_linux_x86_64_only():
    markers = pytest.importorskip("packaging.markers")
    requirements = pytest.importorskip("packaging.requirements")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    mkl = [requirements.Requirement(r) for r in pyproject["project"]["dependencies"] if r.lower().startswith("mkl")]
    assert len(mkl) == 1 and mkl[0].marker is not None, mkl

    def applies(system: str, machine: str) -> bool:
        return mkl[0].marker.evaluate({**markers.default_environment(), "sys_platform": system, "platform_machine": machine})

    assert applies("linux", "x86_64")
    assert not applies("linux", "aarch64") and not applies("darwin", "arm64") and not applies("win32", "AMD64")


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
