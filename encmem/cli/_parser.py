"""The ``encmem`` command line: its subcommands, their options, and the help's epilog."""

from __future__ import annotations

import argparse
from typing import Any

from ._args import busy_timeout, key_id, out_path, parse_ttl, positive_int, table_name
from ._history_audit import head_arg

_EPILOG = """\
keys: from --key-file FILE, else ENCMEM_KEYS ('kid:key,kid:key', primary first), else
ENCMEM_KEY (one key). Keys never appear in output, logs or errors.

inspect, verify, head, export, every --dry-run and erase --idle-longer-than without --yes
only read: they open the store (and a --key-store file) read-only.

exit codes:
  0    success
  1    findings: verify found problems (in items or in a session's history), head met a
       history that does not verify, erase was not confirmed, or its residue scan still
       found copies of an erased session
  2    usage error, an export file that exists or cannot be created, or output (stdout
       or the export file) that cannot be written
  3    key problem: no key, a malformed key, a key id the keys lack, a key that opens none
       of its key id's items, or items that fail authentication (nothing was changed)
  4    store problem: no such file, not a session store, read-only (for a command that
       writes), locked, unreachable, no such session, plaintext or unreadable rows
  5    unexpected error (run with --debug to see the traceback)
  6    erase destroyed the seed and deleted the rows, but another reader kept the WAL from
       being emptied: old copies of the pages remain until `erase --finish` runs after
       the readers are done
  130  interrupted (purge, rotate, encrypt: every finished batch is committed)
"""


def store_command(
    sub: Any, name: str, help_text: str, keys: bool = True
) -> argparse.ArgumentParser:
    """A subcommand working on a store (DB), with the options every such command takes."""
    cmd: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument(
        "db",
        metavar="DB",
        help="a SQLite file, or a database URL (postgresql://..., sqlite+aiosqlite:///...)",
    )
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.add_argument(
        "--sessions-table",
        type=table_name("--sessions-table"),
        default="agent_sessions",
        metavar="NAME",
        help="the sessions table (default: %(default)s)",
    )
    cmd.add_argument(
        "--messages-table",
        type=table_name("--messages-table"),
        default="agent_messages",
        metavar="NAME",
        help="the messages table (default: %(default)s)",
    )
    cmd.add_argument(
        "--busy-timeout",
        type=busy_timeout,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for a locked SQLite file (default: 5)",
    )
    if keys:
        cmd.add_argument(
            "--key-file", metavar="FILE", help="file with 'kid:key' pairs, one key, or 32 raw bytes"
        )
    cmd.add_argument(
        "--key-store",
        type=out_path,
        metavar="PATH|URL",
        help="where the sessions' seeds live when not in the store itself: a SQLite file "
        "(SQLiteKeyStore) or a database URL (SQLAlchemyKeyStore), as the applications use",
    )
    return cmd


def _add_maintenance_commands(sub: Any) -> None:
    for name, text in (
        ("purge", "delete items older than --ttl from storage"),
        ("rotate", "re-seal every item under the primary key (resumable)"),
        ("encrypt", "seal plaintext items and upgrade Agents SDK (v1) items in place (one-way)"),
    ):
        cmd = store_command(sub, name, text)
        if name == "purge":
            cmd.add_argument("--ttl", type=parse_ttl, required=True, help="e.g. 30d, 12h, 600")
        if name == "rotate":
            cmd.add_argument(
                "--shred-ready",
                action="store_true",
                help="seal every session's items under a key derived with its seed, so that "
                "an erase shreds every copy of them, backups too (needs a key store: the "
                "store's own, or --key-store, whose file is created if it does not exist)",
            )
        cmd.add_argument("--dry-run", action="store_true", help="count, change nothing")
        cmd.add_argument(
            "--skip-unreadable",
            action="store_true",
            help="proceed even if some items cannot be opened (they stay as they are)",
        )
        cmd.add_argument(
            "--batch-size",
            type=positive_int,
            default=500,
            metavar="N",
            help="items per committed batch (default: %(default)s)",
        )


def _add_audit_commands(sub: Any) -> None:
    """inspect, verify and head: the commands that only look."""
    inspect = store_command(sub, "inspect", "sessions, item counts, branches, key ids, expiry")
    inspect.add_argument("--ttl", type=parse_ttl, help="count items older than this as expired")
    verify = store_command(
        sub,
        "verify",
        "audit: exit 0 only if every item is valid under a known key and every session's "
        "history is intact",
    )
    verify.add_argument("--ttl", type=parse_ttl, help="also flag items older than this")
    verify.add_argument(
        "--head",
        type=head_arg,
        action="append",
        default=[],
        metavar="SESSION[@BRANCH]=ANCHOR",
        help="also check that the session's history (or the branch's) still ends at ANCHOR, "
        "as `encmem head` printed it (repeatable)",
    )
    head = store_command(
        sub, "head", "print the anchor of each session's history (SESSION[@BRANCH]=ANCHOR)"
    )
    head.add_argument("--session", metavar="ID", help="only this session (default: every one)")
    head.add_argument("--branch", metavar="BRANCH", help="only this branch (with --session)")


def _add_session_commands(sub: Any) -> None:
    """export and erase: the commands about one session."""
    export = store_command(sub, "export", "decrypted JSON Lines of one session (access requests)")
    export.add_argument("--session", required=True, metavar="ID", help="the session to export")
    export.add_argument(
        "--out",
        type=out_path,
        metavar="FILE",
        help="write to this new file (created readable by you only, mode 0600) instead of stdout",
    )
    export.add_argument(
        "--force", action="store_true", help="replace FILE if it exists (it is created anew)"
    )
    erase = store_command(
        sub,
        "erase",
        "destroy a session's seed, then delete every row of it from every table, and print "
        "a receipt",
        keys=False,
    )
    which = erase.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", metavar="ID", help="the session to erase")
    which.add_argument(
        "--idle-longer-than",
        type=parse_ttl,
        metavar="DURATION",
        help="every session with no write for this long (e.g. 30d): listed, or erased with --yes",
    )
    erase.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (with --idle-longer-than: erase, not only list)",
    )
    erase.add_argument(
        "--finish",
        action="store_true",
        help="complete an erase that exited 6: empty the WAL and scan again (deletes nothing more)",
    )


def _add_schema_command(sub: Any) -> None:
    """schema: the DDL, printed; connects to nothing."""
    text = "print the SQL that creates the tables of the SQLAlchemy backends (for DBAs)"
    schema = sub.add_parser("schema", help=text, description=text)
    schema.add_argument(
        "--url",
        required=True,
        metavar="URL",
        help="the database URL, for its dialect (postgresql://..., sqlite+aiosqlite:///...); "
        "nothing connects to it",
    )
    schema.add_argument(
        "--advanced",
        action="store_true",
        help="AdvancedSQLAlchemySession's tables too (branches, turn structure, usage)",
    )
    for option, default in (("--sessions-table", "agent_sessions"),
                            ("--messages-table", "agent_messages")):  # fmt: skip
        schema.add_argument(
            option,
            type=table_name(option),
            default=default,
            metavar="NAME",
            help=f"the {option[2:-6]} table (default: %(default)s)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encmem",
        description="Encrypted, expiring conversation memory for AI agents.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the offline demo on a SQLite file")
    demo.add_argument("--db", default="encmem-demo.db", help="database file (default: %(default)s)")
    keygen = sub.add_parser("keygen", help="print a new random master key (nothing else)")
    keygen.add_argument("--kid", type=key_id, help="print it as KID:KEY, ready for ENCMEM_KEYS")
    _add_audit_commands(sub)
    _add_maintenance_commands(sub)
    _add_session_commands(sub)
    _add_schema_command(sub)
    return parser
