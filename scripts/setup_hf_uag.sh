#!/usr/bin/env bash
# Build a virtual environment with Hugging Face transformers (CPU torch), installed the way a user would,
# for the side-by-side against HF's Universal Assisted Generation (benchmarks/test_vs_hf_uag.py).
#
#   scripts/setup_hf_uag.sh [VENV_DIR]
#
# VENV_DIR defaults to ./hf-venv. torch's CPU wheel comes from the machine's local wheel folder when pip
# is configured with one (find-links), else from PyTorch's CPU index. Afterwards run
#   SPECFW_HF_PYTHON=VENV_DIR/bin/python pytest benchmarks/test_vs_hf_uag.py -s
set -euo pipefail

venv_dir=${1:-hf-venv}
python3 -m venv "$venv_dir"
pip=("$venv_dir/bin/pip" install)
# torch's CPU build: a local +cpu wheel where pip's find-links folder has one, else PyTorch's CPU index
# (plain `pip install torch` on Linux brings the CUDA build and its multi-GB nvidia-* dependencies).
cpu_torch=""
for folder in ${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true); do
  wheel=$(ls "$folder"/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$wheel" ]]; then cpu_torch=$(basename "$wheel" | cut -d- -f2); fi
done
if [[ -n "$cpu_torch" ]]; then
  "${pip[@]}" "torch==$cpu_torch"
else
  "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
fi
"${pip[@]}" transformers accelerate tiktoken sentencepiece protobuf
"$venv_dir/bin/python" -c "import torch, transformers; \
from transformers.generation.candidate_generator import UniversalSpeculativeDecodingGenerator; \
print('hf ready: torch', torch.__version__, 'transformers', transformers.__version__)"
