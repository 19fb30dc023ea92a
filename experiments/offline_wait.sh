#!/usr/bin/env bash
# Wait for the runs that experiments/offline_qwen15.sh started, then say where they are and pack what they wrote:
#   bash experiments/offline_wait.sh RES SECONDS [OUT]
# Returns as soon as RES/ALL_DONE exists, or after SECONDS (so that a machine lent by the call is never left
# waiting on a sleep after the runs have ended); prints the driver's log, the end of the runs' progress, jobs.tsv
# and each run's validation accuracies; with OUT, writes OUT/res.tgz (every run file but adapters, weights,
# generations and traces) and OUT/val.tgz (the validation generations, for the paired tests of
# experiments/qwen15_tables.py). Exit code: 0 when ALL_DONE exists, 3 while the runs go on, 2 on bad arguments.
set -euo pipefail
die() { echo "offline_wait.sh: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: offline_wait.sh RES SECONDS [OUT]"
RES=$1 SECS=$2 OUT=${3:-}
[ -d "$RES" ] || die "$RES: no such folder"
[[ $SECS =~ ^[0-9]+$ ]] || die "SECONDS: $SECS is not a whole number"
[ -z "$OUT" ] || [ -d "$OUT" ] || die "$OUT: no such folder"
end=$(( $(date +%s) + SECS ))
while [ ! -e "$RES/ALL_DONE" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 2; done
cd "$RES"
# Progress bars (carriage returns) would fill the output: keep the last state of each line.
[ -f driver.log ] && tr '\r' '\n' < driver.log | grep -v '%|' || true
[ -f qwen15.log ] && tail -n 8 qwen15.log
[ -f qwen15/jobs.tsv ] && cut -f1-3 qwen15/jobs.tsv
for m in qwen15/*/metrics.jsonl; do
  [ -f "$m" ] || continue
  python3 - "$m" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
print(sys.argv[1].split("/")[1], " ".join(f"{r['iteration']}:{100 * r['accuracy']:.1f}" for r in rows
                                         if r.get("split") == "val" and r.get("language") != "all"))
PY
done
if [ -n "$OUT" ] && [ -d qwen15 ]; then
  tar czf "$OUT/res.tgz" --exclude='*/adapter*' --exclude='*.safetensors' --exclude='*generations.csv' \
    --exclude='*trace*' --exclude='part_*' qwen15 $(ls qwen15.log driver.log 2>/dev/null)
  # validation answers, and the letter-logit evaluations' (know-logit0, afr-logit, logit-<run>)
  { find qwen15 -path '*/val/generations.csv'; find qwen15 -maxdepth 2 -path 'qwen15/*logit*/generations.csv'; } |
    tar czf "$OUT/val.tgz" -T -
fi
[ -e ALL_DONE ] && { echo "ALL_DONE"; exit 0; }
echo "still running"; exit 3
