#!/usr/bin/env bash
# The runs behind docs/results.md, on one GPU (every command also runs on CPU, much slower):
#   QWEN=$(bash experiments/get_qwen.sh) bash experiments/results.sh
# Experiment 1 and 3: STaR strategies (sft, dpo, reinforce + quiet_star, weighted_sft) on English MMLU
#   with Qwen2.5-Coder-0.5B-Instruct, the same questions, samples and budget for each strategy.
# Experiment 2: the same four strategies with the embedded SmolLM2-135M, which starts below chance.
# Experiment 4: STaR (sft) with the 0.5B model on the African subset, native vs translate prompting.
# Letter-logit evaluations of both models give the knowledge-only reference.
# Runs go concurrently (PAR at a time) into $RUNS/<name>; a finished run is skipped, a stopped one
# resumes. jobs.tsv records each run's wall time and exit code.
set -uo pipefail
QWEN=${QWEN:?set QWEN to the Qwen2.5-Coder-0.5B-Instruct .gguf (bash experiments/get_qwen.sh prints it)}
R=${RUNS:-runs/results}
PAR=${PAR:-12}
ONLY=${ONLY:-.}                   # run only the jobs whose name matches this regular expression
TRAIN_LIMIT=${TRAIN_LIMIT:-400}   # English train questions per iteration (x 4 samples)
AFR_LIMIT=${AFR_LIMIT:-60}       # African subset: questions per language (12 languages)
# shellcheck source=experiments/jobs.sh
source "$(dirname "$0")/jobs.sh"
check_only results.sh
mkdir -p "$R"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

B="trainer.val_limit=null trainer.samples_per_question=4 trainer.gen_batch_size=256 eval.batch_size=256"
B="$B trainer.train_batch_size=8 trainer.grad_accum=2 progress=false"
EN="trainer.train_limit=$TRAIN_LIMIT $B"
Q="model=$QWEN trainer.max_new_tokens=384 eval.max_new_tokens=384"
S="trainer.max_new_tokens=256"    # the embedded model's runs: 256-token rationales (the default is sized for a laptop)
RF="trainer=reinforce trainer.reward=quiet_star trainer.baseline=mean"

jobs() {  # name|starloop arguments, most important first
  cat <<JOBS
qwen-sft|train $Q $EN trainer=sft trainer.iterations=3
qwen-dpo|train $Q $EN trainer=dpo trainer.iterations=2
qwen-reinforce|train $Q $EN $RF trainer.iterations=2
qwen-weighted_sft|train $Q $EN trainer=weighted_sft trainer.iterations=2
qwen-logit|eval $Q eval.mode=logit eval.batch_size=64 progress=false
smol-sft|train $S $EN trainer=sft trainer.iterations=3
smol-dpo|train $S $EN trainer=dpo trainer.iterations=2
smol-reinforce|train $S $EN $RF trainer.iterations=2
smol-weighted_sft|train $S $EN trainer=weighted_sft trainer.iterations=2
smol-logit|eval eval.mode=logit eval.batch_size=64 progress=false
qwen-afr-native|train $Q $B data=mmlu-afr data.language=all data.limit=$AFR_LIMIT trainer.train_limit=null prompt=native trainer=sft trainer.iterations=1
qwen-afr-translate|train $Q $B data=mmlu-afr data.language=all data.limit=$AFR_LIMIT trainer.train_limit=null prompt=translate trainer=sft trainer.iterations=1
JOBS
}

export R
jobs | pool "$PAR"

# Tables and plots quoted in docs/results.md (made from the run folders alone).
python3 "$(dirname "$0")/results_tables.py" "$R" > "$R/tables.md" && echo "tables: $R/tables.md"
for g in qwen smol; do
  starloop report "$R/$g-sft" "$R/$g-dpo" "$R/$g-reinforce" "$R/$g-weighted_sft" --out "$R/report-english-$g"
done
starloop report "$R/qwen-afr-native" "$R/qwen-afr-translate" --out "$R/report-afr-qwen"
