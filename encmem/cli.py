"""The ``encmem`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .keys import generate_key


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encmem",
        description="Encrypted, expiring conversation memory for AI agents.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the offline demo on a SQLite file")
    demo.add_argument("--db", default="encmem-demo.db", help="database file (default: %(default)s)")
    keygen = commands.add_parser("keygen", help="print a new random master key")
    keygen.add_argument("--kid", help="print it as KID:KEY, ready for ENCMEM_KEYS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "keygen":
        key = generate_key()
        if args.kid:
            from .keys import check_kid

            key = f"{check_kid(args.kid)}:{key}"
        sys.stdout.write(key + "\n")
        return 0
    if args.command == "demo":
        from .demo import main as demo_main

        demo_main(args.db)
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
