#!/usr/bin/env bash
# Baselines of the embedded model (SmolLM2-135M-Instruct) on this CPU, results under runs/baselines/.
#   bash experiments/embedded_baselines.sh
# 1. full MMLU validation split, letter-logit and generative (greedy, 256 new tokens)
# 2. the bundled African clinical subset, 20 val questions per language (same questions in each), under
#    the native, english and translate prompt strategies
set -euo pipefail
OUT=${OUT:-runs/baselines}
run() { echo "== starloop $*" >&2; /usr/bin/time -f "wall %e s" starloop "$@" progress=false | tail -n 1; }
run eval eval.mode=logit out=$OUT/mmlu-val-logit
run eval eval.mode=generate eval.batch_size=32 out=$OUT/mmlu-val-generate
for strategy in native english translate; do
  run eval data=mmlu-afr data.language=all data.limit=20 prompt.strategy=$strategy eval.batch_size=32 \
    out=$OUT/afr-$strategy
done
