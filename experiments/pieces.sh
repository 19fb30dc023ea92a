#!/usr/bin/env bash
# Move a large file (model weights) to a machine that accepts only small transfers: split it into
# pieces under a size limit with a checksum, copy the pieces over one at a time, join and verify there.
#   bash experiments/pieces.sh split FILE DIR [BYTES]   # DIR/<name>.partNN + DIR/<name>.sha256
#   bash experiments/pieces.sh join DIR NAME DEST       # concatenates DIR/NAME.part*, checks the sum
# BYTES defaults to 50000000: a transfer carries at most 64 MiB, the working tree (about 11.4 MB of tracked files
# on 2026-12-02) included, so a piece must leave room for it.
set -euo pipefail
die() { echo "pieces.sh: $*" >&2; exit 2; }
case "${1:-}" in
  split)
    [ $# -ge 3 ] || die "usage: pieces.sh split FILE DIR [BYTES]"
    file=$2 dir=$3 bytes=${4:-50000000} name=$(basename "$2")
    [ -f "$file" ] || die "$file: no such file"
    mkdir -p "$dir"
    (cd "$(dirname "$file")" && sha256sum "$name") > "$dir/$name.sha256"
    split -b "$bytes" -d -a 2 "$file" "$dir/$name.part"
    ls "$dir/$name".part* ;;
  join)
    [ $# -ge 4 ] || die "usage: pieces.sh join DIR NAME DEST"
    dir=$2 name=$3 dest=$4
    [ -f "$dir/$name.sha256" ] || die "$dir/$name.sha256: missing (copy it with the pieces)"
    compgen -G "$dir/$name.part*" > /dev/null || die "$dir/$name.part*: no pieces"
    mkdir -p "$(dirname "$dest")"
    cat "$dir/$name".part* > "$dest.tmp"
    want=$(cut -d' ' -f1 "$dir/$name.sha256")
    got=$(sha256sum "$dest.tmp" | cut -d' ' -f1)
    if [ "$want" != "$got" ]; then rm -f "$dest.tmp"; die "$dest: checksum mismatch (a piece is missing or damaged)"; fi
    mv "$dest.tmp" "$dest"; echo "$dest" ;;
  *) die "usage: pieces.sh split FILE DIR [BYTES] | join DIR NAME DEST" ;;
esac
