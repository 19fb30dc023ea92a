#!/usr/bin/env bash
# The outputs behind tests/fixtures/extraction/outputs.jsonl: small `starloop eval` runs of the embedded
# model and of Qwen2.5-Coder-0.5B-Instruct on the bundled African clinical subset, greedy and sampled,
# native and English instructions, 192 new tokens (so some outputs are cut and some loop). About an hour
# on a busy 2-core CPU (a Qwen run of 12-16 questions takes 10-13 min). New outputs come with label "?";
# label them by hand (tests/fixtures/extraction/README.md).
#   bash experiments/extraction_set.sh
set -euo pipefail
OUT=${OUT:-runs/extraction}
QWEN=$(bash "$(dirname "$0")/get_qwen.sh")
S="eval.max_new_tokens=192"
T="eval.temperature=0.7 eval.top_p=0.95"
runs=()
run() {  # name, then overrides
  local name=$1; shift
  [ -f "$OUT/$name/generations.csv" ] || [ -f "$OUT/$name/results.csv" ] || starloop eval progress=false eval.batch_size=16 "out=$OUT/$name" "$@" | tail -n 1
  runs+=("$OUT/$name")
}
afr() { echo data=mmlu-afr data.language="$1" data.limit="$2"; }
run smol_en_greedy $(afr en 16) $S
run smol_zu_native_greedy $(afr zu 16) $S
run smol_af_native_sampled $(afr af 16) data.split=test $S $T
run smol_xh_english_greedy $(afr xh 16) prompt.strategy=english data.split=test $S
run smol_ig_native_sampled $(afr ig 16) $S $T
run smol_en_sampled $(afr en 16) data.split=test $S $T
run smol_st_english_sampled $(afr st 16) prompt.strategy=english $S $T
run qwen_en_greedy model="$QWEN" $(afr en 16) data.split=test $S
run qwen_zu_english_greedy model="$QWEN" $(afr zu 12) prompt.strategy=english data.split=test $S
run qwen_af_native_sampled model="$QWEN" $(afr af 12) $S $T
run smol_am_native_greedy $(afr am 12) data.split=test $S
run smol_tn_native_greedy $(afr tn 16) data.split=test $S
run smol_sn_english_greedy $(afr sn 16) prompt.strategy=english data.split=test $S
run smol_nso_native_sampled $(afr nso 16) $S $T
python "$(dirname "$0")/extraction_collect.py" tests/fixtures/extraction/outputs.jsonl "${runs[@]}"
