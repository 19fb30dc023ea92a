#!/usr/bin/env bash
# experiments/qwen15.sh on a GPU machine that reaches no registry, from weights and wheels brought over:
#   bash experiments/offline_qwen15.sh PIECES WHEELS RES [VAR=value ...]
# PIECES: the .partNN files and the .sha256 written by `experiments/pieces.sh split` for
#   qwen2.5-coder-1.5b-instruct.gguf; WHEELS: wheels of what the machine lacks (hydra-core, omegaconf,
#   antlr4-python3-runtime, gguf, datasets, dill, multiprocess; trl for the benchmark's reference), installed into
#   RES/site; RES: the model, its converted copy, the run folders and the logs. VAR=value pairs go to qwen15.sh
#   (LOW=zu ONLY=... PAR=5 GEN=1024 EVB=512 CKPT=true, say). Joins and checks the pieces, installs the wheels,
#   converts the model once, then runs qwen15.sh detached from this shell (it survives a lost connection):
#   RES/driver.log says where it is, RES/qwen15.log holds the runs' progress, RES/ALL_DONE marks the end.
# Follow it with `bash experiments/offline_wait.sh RES SECONDS OUT`: it returns as soon as the runs end (a fixed
# sleep once left the card idle for more than 7 minutes after they had) and packs the results into OUT.
set -euo pipefail
die() { echo "offline_qwen15.sh: $*" >&2; exit 2; }
[ $# -ge 3 ] || die "usage: offline_qwen15.sh PIECES WHEELS RES [VAR=value ...]"
PIECES=$1 WHEELS=$2 RES=$3; shift 3
NAME=qwen2.5-coder-1.5b-instruct.gguf
[ -f "$PIECES/$NAME.sha256" ] || die "$PIECES/$NAME.sha256: missing"
[ -d "$WHEELS" ] || die "$WHEELS: no such folder"
for kv in "$@"; do [[ $kv == [A-Z]*=* ]] || die "$kv: not VAR=value"; done
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$(dirname "$RES")" ] || die "$(dirname "$RES"): no such folder"
RES=$(cd "$(dirname "$RES")" && pwd)/$(basename "$RES")
# A failed set-up (a damaged piece, a wheel that does not install) leaves behind nothing that it created.
made=()
for p in "$RES" "$RES/code" "$RES/model" "$RES/site"; do [ -e "$p" ] || made+=("$p"); done
trap 'rm -rf "${made[@]}"' ERR
mkdir -p "$RES"
# The runs read a copy of the code: the checkout may change while they run (a pull, an edit).
HERE=$RES/code
rm -rf "$HERE" && mkdir -p "$HERE" && cp -r "$SRC/src" "$SRC/experiments" "$HERE/"
bash "$HERE/experiments/pieces.sh" join "$PIECES" "$NAME" "$RES/model/$NAME" >/dev/null
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$RES/site" "$WHEELS"/*.whl
fi
export PYTHONPATH="$HERE/src:$RES/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 STARLOOP_CACHE="$RES/cache"
printf '#!/bin/bash\nexec python3 -m starloop.cli "$@"\n' > "$RES/starloop" && chmod +x "$RES/starloop"
setsid nohup env "$@" STARLOOP="${STARLOOP:-$RES/starloop}" MODEL="$RES/model/$NAME" RUNS="$RES/qwen15" bash -c '
  t0=$(date +%s)
  echo "[0 s] converting"
  python3 -c "import sys; from starloop.models import resolve_model_source as r; print(r(sys.argv[1])[0])" "$MODEL" ||
    { echo "conversion failed"; touch "$0/ALL_DONE"; exit 1; }
  echo "[$(( $(date +%s) - t0 )) s] qwen15.sh"
  bash "$1/experiments/qwen15.sh" > "$0/qwen15.log" 2>&1; rc=$?
  echo "[$(( $(date +%s) - t0 )) s] qwen15.sh ended, rc=$rc"
  touch "$0/ALL_DONE"' "$RES" "$HERE" > "$RES/driver.log" 2>&1 < /dev/null &
trap - ERR
echo "started: tail -f $RES/driver.log $RES/qwen15.log"
