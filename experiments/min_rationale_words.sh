#!/usr/bin/env bash
# One sft iteration of the embedded model with and without trainer.min_rationale_words (CPU, ~9 min each
# on 2 cores when run side by side). docs/results.md reports the outcome.
#   bash experiments/min_rationale_words.sh [RUNS]
set -euo pipefail
R=${1:-runs/minwords}
mkdir -p "$R"
for w in 0 5; do
  OMP_NUM_THREADS=1 starloop train trainer.train_limit=64 trainer.samples_per_question=4 trainer.val_limit=100 \
    trainer.iterations=1 trainer.max_new_tokens=128 eval.max_new_tokens=128 trainer.skip_first_validation=true \
    trainer.min_rationale_words=$w progress=false out="$R/w$w" > "$R/w$w.log" 2>&1 &
done
wait
tail -n 1 "$R"/w*/metrics.jsonl
