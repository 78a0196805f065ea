#!/usr/bin/env bash
# Build a virtual environment with the reference paper's mlx-lm fork, installed the way a user would.
#
#   scripts/setup_paper_fork.sh SOURCE_DIR [VENV_DIR]
#
# SOURCE_DIR is a checkout of krzysiekfonal/mlx-lm at branch feature/slem-with-context-aware, e.g.
#   git clone -b feature/slem-with-context-aware https://github.com/krzysiekfonal/mlx-lm fork-src
# VENV_DIR defaults to ./fork-venv. Afterwards run the side-by-side benchmark with
#   SPECFW_FORK_PYTHON=VENV_DIR/bin/python pytest benchmarks/test_vs_paper_fork.py
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1/mlx_lm/generate.py" ]]; then
  echo "usage: $0 SOURCE_DIR [VENV_DIR]  (SOURCE_DIR: a checkout of the paper's mlx-lm fork)" >&2
  exit 2
fi
source_dir=$(cd "$1" && pwd)
venv_dir=${2:-fork-venv}
if ! grep -q "translation_prefix_tokens" "$source_dir/mlx_lm/generate.py"; then
  echo "$0: $source_dir is not the feature/slem-with-context-aware branch (no translation_prefix_tokens)" >&2
  exit 2
fi

python3 -m venv "$venv_dir"
"$venv_dir/bin/pip" install --upgrade pip
case "$(uname -s)" in
  Darwin) "$venv_dir/bin/pip" install "$source_dir" ;;   # mlx comes with Metal on macOS
  *) "$venv_dir/bin/pip" install "mlx[cpu]" "$source_dir" ;;
esac
"$venv_dir/bin/python" -c "import mlx_lm, inspect; from mlx_lm.generate import speculative_generate_step as s; \
assert 'draft_tokenizer' in inspect.signature(s).parameters; print('fork ready:', mlx_lm.__file__)"
