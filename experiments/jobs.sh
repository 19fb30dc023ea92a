# Sourced by experiments/qwen15.sh and experiments/results.sh: picking job lines ("name|starloop arguments")
# by ONLY, an extended regular expression matched against the run's name as grep -E matches (^ and $ anchor it),
# and running them, several at a time, into $R (exported by the caller; $STARLOOP, if set, replaces `starloop`).

check_only() {  # one line and exit 2 when ONLY is not a regular expression ($1: the script's name)
  [[ "" =~ $ONLY ]]
  [ $? -ne 2 ] || { echo "$1: ONLY: not a regular expression: $ONLY" >&2; exit 2; }
}

select_jobs() {  # the job lines on stdin whose run name (before the first |) matches ONLY
  local l
  while IFS= read -r l; do if [[ ${l%%|*} =~ $ONLY ]]; then printf '%s\n' "$l"; fi; done
}

run_one() {  # one job line -> $R/<name>, log in $R/<name>.log, a row in $R/jobs.tsv, $R/<name>.done on success
  local name=${1%%|*} args=${1#*|} t0 rc
  # a finished run is skipped (.done; or the metrics.json an evaluation writes once it has scored every question,
  # which a train run never writes at its top level), a stopped one resumes
  if [ -e "$R/$name.done" ] || [ -s "$R/$name/metrics.json" ]; then echo "skip $name"; return; fi
  t0=$(date +%s)
  echo "start $name $(date +%T)"
  # shellcheck disable=SC2086
  ${STARLOOP:-starloop} $args out="$R/$name" >"$R/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "starloop $args out=$R/$name" >>"$R/jobs.tsv"
  [ "$rc" = 0 ] && touch "$R/$name.done"
  echo "end $name rc=$rc $(date +%T)"
}
export -f run_one

pool() {  # the job lines on stdin that ONLY picks, $1 at a time
  select_jobs | xargs -d '\n' -P "$1" -I{} bash -c 'run_one "$@"' _ {}
}
