#!/usr/bin/env bash
# Move a large file (model weights) to a machine that accepts only small transfers: split it into
# pieces under a size limit with a checksum, copy the pieces over one at a time, join and verify there.
#   bash experiments/pieces.sh split FILE DIR [BYTES]   # DIR/<name>.partNN + DIR/<name>.sha256
#   bash experiments/pieces.sh join DIR NAME DEST       # concatenates DIR/NAME.part*, checks the sum
# BYTES defaults to 56000000 (under 64 MiB with room for a small working tree beside it).
set -euo pipefail
case "${1:-}" in
  split)
    file=$2 dir=$3 bytes=${4:-56000000} name=$(basename "$2")
    mkdir -p "$dir"
    (cd "$(dirname "$file")" && sha256sum "$name") > "$dir/$name.sha256"
    split -b "$bytes" -d -a 2 "$file" "$dir/$name.part"
    ls "$dir/$name".part* ;;
  join)
    dir=$2 name=$3 dest=$4
    mkdir -p "$(dirname "$dest")"
    cat "$dir/$name".part* > "$dest.tmp"
    want=$(cut -d' ' -f1 "$dir/$name.sha256")
    got=$(sha256sum "$dest.tmp" | cut -d' ' -f1)
    if [ "$want" != "$got" ]; then
      echo "pieces.sh: $dest: checksum mismatch (a piece is missing or damaged)" >&2; rm -f "$dest.tmp"; exit 2
    fi
    mv "$dest.tmp" "$dest"; echo "$dest" ;;
  *) echo "usage: pieces.sh split FILE DIR [BYTES] | join DIR NAME DEST" >&2; exit 2 ;;
esac
