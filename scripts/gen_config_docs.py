"""Write docs/configuration.md from the field comments in src/starloop/config.py.

    python scripts/gen_config_docs.py           # (re)write the file
    python scripts/gen_config_docs.py --check   # exit 1 if the file is stale or a field has no comment
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from starloop.hydra_config import class_docs, describe_config

TARGET = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def undocumented() -> list[str]:
    """Dotted keys (or Class.field) of dataclass fields without a comment line above them."""
    return [f"{cls}.{f.key}" for cls, (_, fields) in class_docs().items() for f in fields if not f.doc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the file is stale")
    parser.add_argument("--out", type=Path, default=TARGET, help=f"output file (default {TARGET})")
    args = parser.parse_args(argv)
    missing = undocumented()
    if missing:
        print(f"fields without a comment in config.py: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = describe_config()
    if args.check:
        if not args.out.exists() or args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
