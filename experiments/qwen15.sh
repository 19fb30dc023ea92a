#!/usr/bin/env bash
# The runs behind docs/results.md's Qwen2.5-Coder-1.5B-Instruct section, on one GPU (several runs share it):
#   MODEL=$(bash experiments/get_qwen15.sh) bash experiments/qwen15.sh
# 1. What it knows: letter-logit 0-shot and 5-shot and greedy chain of thought on all of MMLU val.
# 2. English STaR, 3 iterations, TRAIN questions x 4 samples, with and without rationalization.
# 3. Strategy table (same questions, samples and optimizer steps): dpo, iterative RPO, reinforce (rloo,
#    answer_logprob), weighted_sft (answer_logprob), grpo; ITERS_TABLE iterations each (iterative RPO at least 2).
# 4. The bundled African subset: letter-logit, native, English and translate prompting (all languages);
#    then STaR (sft, and weighted_sft with answer_logprob) on the language where native prompting is lowest.
# 5. Rewards: weighted_sft with correct (0/1), answer_logprob and expected_likelihood (smoothed labels, and the
#    model's own answer distribution: elmodel), and sft filtered by gain over no rationale, on English and on that
#    lowest language.
# 6. LOGIT (run names, space-separated): each named run's last adapter scored by letter-logit (0-shot) on the data
#    it was validated on, once every run has ended (logit-<run>-iter_<k>; a run that did not finish is not scored);
#    know-logit0 and afr-logit are the base model's.
# en-sft runs first, beside the evaluations only, so that its stage times are close to one run's; the other English runs
# then reuse its iteration-0 validation and its iteration-1 samples (drawn from the base model with the same
# seed, so identical for every strategy) through trainer.preload_data_for_val/_training. The evaluations
# run beside it. Each run goes to $RUNS/<name> (log beside it); finished runs are skipped, stopped ones
# resume. jobs.tsv records each run's exit code and wall time. PAR runs at a time share the GPU: a first
# try with ten at once filled the card (139 GiB), and halving batch sizes on out-of-memory then made every
# run slow, so keep PAR small and the batches large. Sizes: TRAIN, VAL (null =
# all of val), NEW (tokens per rationale), STEPS (optimizer steps per iteration, 16 sequences each).
# ONLY (an extended regular expression, matched against each run's name: ^ and $ anchor it) picks runs; en-sft
# always runs, since the others start from it.
# LOW names the lowest language instead of taking it from afr-native's metrics (docs/results.md found zu).
# All of it does not fit one 30-minute sitting of one H200 once the weights are brought over; in three (each with
# its own RUNS folder; S='CKPT=true GEN=1024 EVB=512'):
#   LOW=zu ONLY='en-star|low-.*(wsft-correct|wsft-el$|gain)' PAR=2 $S bash experiments/qwen15.sh  # 2; 5 on zu
#   ITERS=1 ONLY='en-(dpo|rpo|rloo|wsft-(logprob|correct|el$)|grpo|sft-gain)' PAR=5 $S bash experiments/qwen15.sh  # 3; 5
#   ITERS=1 LOW=zu LOWPAR=2 ONLY='elmodel|^low-.*-sft$' PAR=2 $S bash experiments/qwen15.sh  # 5: label_dist=model
# and, for what the adapters know (letter-logit before and after one iteration):
#   ITERS=1 LOW=zu ONLY='^en-sft(-gain)?$|^low-zu-sft$|^know-logit0$|^afr-logit$' PAR=2 \
#     LOGIT='en-sft en-sft-gain low-zu-sft' $S bash experiments/qwen15.sh
# The first took 15 minutes of runs on 2026-12-02, the second 23 (docs/results.md, "Fourth sitting", "Fifth sitting").
# On a GPU machine without network access (weights brought as pieces): experiments/offline_qwen15.sh.
set -uo pipefail
MODEL=${MODEL:?set MODEL to the Qwen2.5-Coder-1.5B-Instruct .gguf (bash experiments/get_qwen15.sh prints it)}
R=${RUNS:-runs/qwen15}
PAR=${PAR:-3}
LOWPAR=${LOWPAR:-1}  # low-language runs at a time (beside the PAR English runs)
ONLY=${ONLY:-.}
TRAIN=${TRAIN:-1000}
VAL=${VAL:-null}
EVAL_LIMIT=${EVAL_LIMIT:-null}
NEW=${NEW:-384}
STEPS=${STEPS:-48}
ITERS=${ITERS:-3}
ITERS_TABLE=${ITERS_TABLE:-1}  # one round each (from the same samples) fits a 30-minute sitting; iterative RPO takes 2
GEN=${GEN:-512}        # sequences per sampling batch (4 samples x 128 questions)
EVB=${EVB:-256}        # questions per evaluation batch
TB=${TB:-8}            # sequences per micro-batch (x 2 accumulation = 16 per optimizer step)
CKPT=${CKPT:-false}    # gradient checkpointing (on when several runs must share the memory)
# shellcheck source=experiments/jobs.sh
source "$(dirname "$0")/jobs.sh"
check_only qwen15.sh
mkdir -p "$R"
export R PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

M="model=$MODEL progress=false"
E="$M eval.limit=$EVAL_LIMIT eval.max_new_tokens=$NEW eval.batch_size=$EVB"
T="$M trainer.train_limit=$TRAIN trainer.val_limit=$VAL trainer.samples_per_question=4 trainer.max_new_tokens=$NEW"
T="$T eval.max_new_tokens=$NEW trainer.gen_batch_size=$GEN eval.batch_size=$EVB trainer.train_batch_size=$TB"
T="$T trainer.grad_accum=2 trainer.train_steps=$STEPS trainer.gradient_checkpointing=$CKPT"
AFR="data=mmlu-afr data.language=all"
RPO="trainer=dpo trainer.restart_from_base=false trainer.dpo_reference=previous trainer.dpo_nll_weight=1.0"

evals() {  # name|starloop arguments
  cat <<JOBS
know-logit0|eval $E eval.mode=logit eval.batch_size=64
know-logit5|eval $E eval.mode=logit eval.batch_size=64 prompt.few_shot=5
afr-logit|eval $E $AFR eval.mode=logit eval.batch_size=64
afr-native|eval $E $AFR prompt.strategy=native
afr-english|eval $E $AFR prompt.strategy=english
afr-translate|eval $E $AFR prompt.strategy=translate
know-cot|eval $E eval.mode=generate
JOBS
}

english() {  # after en-sft's iteration 1 has sampled: its iteration-0 validation and iteration-1 samples
  # (the runs of several iterations first, so that they do not start last)
  local P="trainer.preload_data_for_val=$R/en-sft/iter_0/val/generations.csv"
  P="$P trainer.preload_data_for_training=$R/en-sft/iter_1/sample/generations.csv"
  cat <<JOBS
en-star|train $T $P trainer=star trainer.iterations=$ITERS
en-rpo|train $T $P $RPO trainer.iterations=$(( ITERS_TABLE > 2 ? ITERS_TABLE : 2 ))
en-dpo|train $T $P trainer=dpo trainer.iterations=$ITERS_TABLE
en-rloo|train $T $P trainer=reinforce trainer.reward=answer_logprob trainer.baseline=rloo trainer.iterations=$ITERS_TABLE
en-wsft-logprob|train $T $P trainer=weighted_sft trainer.reward=answer_logprob trainer.iterations=$ITERS_TABLE
en-grpo|train $T $P trainer=grpo trainer.iterations=$ITERS_TABLE
en-wsft-correct|train $T $P trainer=weighted_sft trainer.reward=correct trainer.iterations=$ITERS_TABLE
en-wsft-el|train $T $P trainer=weighted_sft trainer.reward=expected_likelihood trainer.label_dist=smoothed trainer.iterations=$ITERS_TABLE
en-wsft-elmodel|train $T $P trainer=weighted_sft trainer.reward=expected_likelihood trainer.label_dist=model trainer.iterations=$ITERS_TABLE
en-sft-gain|train $T $P trainer=sft trainer.reward=gain trainer.require_gain=true trainer.iterations=$ITERS_TABLE
JOBS
}

lowlang() {  # the language where native prompting scores lowest; its train split is all its questions
  local L=$1 A="data=mmlu-afr data.language=$1 trainer.train_limit=null"
  cat <<JOBS
low-$L-sft|train $T $A trainer=sft trainer.iterations=$ITERS
low-$L-wsft-logprob|train $T $A trainer=weighted_sft trainer.reward=answer_logprob trainer.iterations=$ITERS_TABLE
low-$L-wsft-correct|train $T $A trainer=weighted_sft trainer.reward=correct trainer.iterations=$ITERS_TABLE
low-$L-wsft-el|train $T $A trainer=weighted_sft trainer.reward=expected_likelihood trainer.label_dist=smoothed trainer.iterations=$ITERS_TABLE
low-$L-wsft-elmodel|train $T $A trainer=weighted_sft trainer.reward=expected_likelihood trainer.label_dist=model trainer.iterations=$ITERS_TABLE
low-$L-sft-gain|train $T $A trainer=sft trainer.reward=gain trainer.require_gain=true trainer.iterations=$ITERS_TABLE
JOBS
}


lowest() {  # language with the lowest native-prompting accuracy in afr-native's metrics
  python3 - "$R/afr-native/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["by_language"]
print(min((v["accuracy"], k) for k, v in m.items() if k != "en")[1])
PY
}

wait_for() { while [ ! -e "$1" ] && kill -0 "$2" 2>/dev/null; do sleep 5; done; [ -e "$1" ]; }

echo "en-sft|train $T trainer=sft trainer.iterations=$ITERS" | ONLY=. pool 1 &  # every English run needs it
SFT=$!
evals | pool 1 &
EV=$!
# The other English runs start once en-sft has its iteration-1 samples; the low-language runs once
# afr-native has named the language and the evaluations have ended.
( wait_for "$R/en-sft/iter_1/sample/DONE" $SFT && english | pool $(( PAR > 1 ? PAR - 1 : 1 )) ) &
EN=$!
if [ -n "${LOW:-}" ]; then  # the language given: no need to wait for afr-native
  ( echo "$LOW" > "$R/lowest.txt" && lowlang "$LOW" | pool "$LOWPAR" ) &
else
  ( wait_for "$R/afr-native.done" $EV && LOW=$(lowest) && echo "lowest language (native prompting): $LOW" &&
    echo "$LOW" > "$R/lowest.txt" && { wait_for "$R/know-cot.done" $EV; lowlang "$LOW" | pool "$LOWPAR"; } ) &
fi
LO=$!
wait $SFT $EV $EN $LO

adapter_logits() {  # LOGIT's finished runs -> letter-logit jobs logit-<run>-iter_<k> on their last adapter
  local r t k last d names
  read -r -a names <<< "${LOGIT:-}"  # words, never file names
  for r in "${names[@]}"; do
    [ -e "$R/$r.done" ] || { echo "logit-$r: $R/$r did not finish; not scored" >&2; continue; }
    last=""
    for t in "$R/$r"/iter_*/train/DONE; do  # the last trained iteration, by number (iter_10 after iter_9)
      [ -e "$t" ] && [ -d "${t%/DONE}/adapter" ] || continue
      k=${t#"$R/$r"/iter_}; k=${k%%/*}
      [[ $k =~ ^[0-9]+$ ]] && { [ -z "$last" ] || [ "$k" -gt "$last" ]; } && last=$k
    done
    [ -n "$last" ] || { echo "logit-$r: $R/$r holds no adapter; not scored" >&2; continue; }
    d=""; [[ $r =~ ^low-([a-z]+)- ]] && d="data=mmlu-afr data.language=${BASH_REMATCH[1]}"
    echo "logit-$r-iter_$last|eval $E $d eval.mode=logit eval.batch_size=64 checkpoint=$R/$r/iter_$last"
  done
}
adapter_logits | ONLY=. pool "$PAR"
echo "all jobs ended $(date +%T)"
