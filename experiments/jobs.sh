# Sourced by experiments/qwen15.sh and experiments/results.sh: picking job lines ("name|starloop arguments")
# by ONLY, an extended regular expression matched against the run's name as grep -E matches (^ and $ anchor it).

check_only() {  # one line and exit 2 when ONLY is not a regular expression ($1: the script's name)
  [[ "" =~ $ONLY ]]
  [ $? -ne 2 ] || { echo "$1: ONLY: not a regular expression: $ONLY" >&2; exit 2; }
}

select_jobs() {  # the job lines on stdin whose run name (before the first |) matches ONLY
  local l
  while IFS= read -r l; do if [[ ${l%%|*} =~ $ONLY ]]; then printf '%s\n' "$l"; fi; done
}
