"""The ``encmem`` command: look at, audit and maintain encrypted session stores.

Exit codes follow the type of the error (``_EXIT_BY_TYPE``), never its wording: 0 success;
1 findings; 2 usage; 3 keys; 4 the store; 5 unexpected (the epilog below says more). inspect,
verify, export and dry runs open the store read-only. Reference: docs/cli.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from .._keys import Keyring, generate_key
from .._protocol import SessionStore
from ..errors import (
    CommandError,
    DecryptionError,
    EncmemError,
    InvalidKeyError,
    ResiduePendingError,
    SessionClosedError,
    StoreError,
    TamperedItemError,
    UnknownKeyIdError,
    UnsupportedOperation,
)
from . import _commands as commands
from ._args import busy_timeout, key_id, out_path, parse_ttl, positive_int, table_name
from ._export import Output, open_private, silence_stdout
from ._report import export_notice, print_report, safe

_EPILOG = """\
keys: from --key-file FILE, else ENCMEM_KEYS ('kid:key,kid:key', primary first), else
ENCMEM_KEY (one key). Keys never appear in output, logs or errors.

inspect, verify, export and every --dry-run only read: they open the store read-only.

exit codes:
  0    success
  1    findings: verify found problems, or erase was not confirmed
  2    usage error, an export file that exists or cannot be created, or output (stdout
       or the export file) that cannot be written
  3    key problem: no key, a malformed key, a key id the keys lack, a key that opens none
       of its key id's items, or items that fail authentication (nothing was changed)
  4    store problem: no such file, not a session store, read-only (for a command that
       writes), locked, unreachable, no such session, plaintext or unreadable rows
  5    unexpected error (run with --debug to see the traceback)
  6    erase deleted the rows, but another reader kept the WAL from being emptied: old
       copies of the pages remain until `erase --finish` runs after the readers are done
  130  interrupted (purge, rotate, encrypt: every finished batch is committed)
"""

def _store_command(
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
    return cmd


def _add_maintenance_commands(sub: Any) -> None:
    for name, text in (
        ("purge", "delete items older than --ttl from storage"),
        ("rotate", "re-seal every item under the primary key (resumable)"),
        ("encrypt", "seal plaintext items and upgrade Agents SDK (v1) items in place (one-way)"),
    ):
        cmd = _store_command(sub, name, text)
        if name == "purge":
            cmd.add_argument("--ttl", type=parse_ttl, required=True, help="e.g. 30d, 12h, 600")
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


def _build_parser() -> argparse.ArgumentParser:
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
    inspect = _store_command(sub, "inspect", "sessions, item counts, branches, key ids, expiry")
    inspect.add_argument("--ttl", type=parse_ttl, help="count items older than this as expired")
    verify = _store_command(
        sub, "verify", "audit: exit 0 only if every item is valid under a known key"
    )
    verify.add_argument("--ttl", type=parse_ttl, help="also flag items older than this")
    _add_maintenance_commands(sub)
    export = _store_command(sub, "export", "decrypted JSON Lines of one session (access requests)")
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
    erase = _store_command(
        sub, "erase", "delete every row of one session from every table", keys=False
    )
    erase.add_argument("--session", required=True, metavar="ID", help="the session to erase")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase.add_argument(
        "--finish",
        action="store_true",
        help="complete an erase that exited 6: empty the WAL (deletes nothing more)",
    )
    return parser


_READ_ONLY_COMMANDS = ("inspect", "verify", "export")


def _reads_only(args: argparse.Namespace) -> bool:
    """inspect, verify, export and every --dry-run open the store read-only: they change
    nothing, and work on read-only files in read-only directories."""
    return args.command in _READ_ONLY_COMMANDS or bool(getattr(args, "dry_run", False))


async def _dispatch(
    args: argparse.Namespace, store: SessionStore, keyring: Keyring | None
) -> tuple[int, dict[str, Any]]:
    if args.command == "inspect":
        return await commands.inspect_store(store, keyring, args.ttl)
    if args.command == "erase":
        return await commands.erase(store, args.session, args.yes, finish=args.finish)
    assert keyring is not None
    if args.command == "verify":
        return await commands.verify_store(store, keyring, args.ttl)
    if args.command == "export":
        out_path = args.out

        def destination() -> Output:
            return open_private(out_path, args.force) if out_path else Output(sys.stdout)

        return await commands.export_session(store, keyring, args.session, destination)
    return await commands.run_maintenance(
        args.command,
        store,
        keyring,
        ttl=getattr(args, "ttl", None),
        dry_run=args.dry_run,
        skip_unreadable=args.skip_unreadable,
        batch_size=args.batch_size,
        # A store opened to write had its dry pass in _preflight, on the read-only probe.
        prechecked=not args.dry_run,
    )


async def _preflight(
    args: argparse.Namespace, store: SessionStore, keyring: Keyring | None
) -> None:
    """What a command that writes would refuse, found on the store opened read-only, so
    that a refusal changes nothing (opening a store to write switches a SQLite file to WAL)."""
    if args.command == "erase":
        if not args.finish and args.session not in await store.session_ids():
            raise CommandError(f"no session {args.session!r} in this store", commands.EXIT_STORE)
        return
    assert keyring is not None
    await commands.run_maintenance(
        args.command,
        store,
        keyring,
        ttl=getattr(args, "ttl", None),
        dry_run=True,
        skip_unreadable=args.skip_unreadable,
        batch_size=args.batch_size,
    )


async def _run(args: argparse.Namespace) -> int:
    from ..backends import open_store
    from ..backends._pg_url import url_parameter_problem

    keyring = None
    if args.command != "erase":
        needs_keys = args.command != "inspect"
        if needs_keys or args.key_file or _env_has_keys():
            keyring = commands.load_keyring(args.key_file)
    # A read without locks (a WAL file with no log beside it) of a file a writer changed
    # meanwhile is refused when the store closes; a report not yet printed is made again.
    rereads = 5 if _reads_only(args) and args.command != "export" else 0
    if (problem := url_parameter_problem(args.db)) is not None:
        raise CommandError(f"the URL cannot be used: {problem}", commands.EXIT_USAGE)
    while True:
        store = await open_store(
            args.db,
            sessions_table=args.sessions_table,
            messages_table=args.messages_table,
            busy_timeout=args.busy_timeout,
            read_only=_reads_only(args),
            preflight=lambda probe: _preflight(args, probe, keyring),
        )
        try:
            code, report = await _dispatch(args, store, keyring)
        except BaseException:
            await store.aclose()
            raise
        try:
            await store.aclose()
        except StoreError:
            if rereads == 0:
                raise
            rereads -= 1
            continue
        break
    if args.command != "export":
        print_report(args.command, report, args.json)
    elif report.get("output_closed"):
        pass  # the reader stopped reading: nothing more to say, as cat says nothing
    elif args.json and args.out is None:
        sys.stderr.write(json.dumps(report) + "\n")
    elif args.json:
        print_report(args.command, report, True)
    else:
        sys.stderr.write(export_notice(report, args.out) + "\n")
    return code


def _env_has_keys() -> bool:
    import os

    return bool(
        os.environ.get("ENCMEM_KEYS", "").strip() or os.environ.get("ENCMEM_KEY", "").strip()
    )


def _locked(exc: BaseException) -> bool:
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()


def _command(args: argparse.Namespace) -> int:
    """Run the command the arguments name; its errors go to :func:`main`'s one line."""
    if args.command == "keygen":
        key = generate_key() if args.kid is None else f"{args.kid}:{generate_key()}"
        out = Output(sys.stdout)
        out.write(key + "\n")
        out.flush()
        return commands.EXIT_OK
    if args.command == "demo":
        from ._demo import main as demo_main

        demo_main(args.db)
        return commands.EXIT_OK
    return asyncio.run(_run(args))


def _interrupted(command: str) -> str:
    if command in ("purge", "rotate", "encrypt"):
        return "interrupted; every finished batch is committed, run again to go on"
    return "interrupted"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        return _command(args)
    try:
        return _command(args)
    except BrokenPipeError:  # the reader stopped reading: the output ends quietly, as cat's
        silence_stdout()
        return commands.EXIT_OK
    except KeyboardInterrupt:
        message, code = _interrupted(args.command), 130
    except Exception as exc:  # one line a person can act on; --debug shows the traceback
        message, code = _explain(exc)
    sys.stderr.write(f"encmem {args.command}: {message}\n")
    return code


_EXIT_BY_TYPE: tuple[tuple[type[EncmemError], int], ...] = (
    (CommandError, -1),  # carries its own code
    (InvalidKeyError, commands.EXIT_KEYS),
    (UnknownKeyIdError, commands.EXIT_KEYS),
    (TamperedItemError, commands.EXIT_KEYS),
    (ResiduePendingError, commands.EXIT_PENDING),
    (StoreError, commands.EXIT_STORE),
    (DecryptionError, commands.EXIT_STORE),  # plaintext or corrupt rows: the store's content
    (SessionClosedError, commands.EXIT_STORE),
    (UnsupportedOperation, commands.EXIT_STORE),
)


def _explain(exc: Exception) -> tuple[str, int]:
    """One line a person can act on, and the exit code for the kind of failure."""
    if isinstance(exc, EncmemError):
        for kind, code in _EXIT_BY_TYPE:
            if isinstance(exc, kind):
                if isinstance(exc, CommandError):
                    return str(exc), exc.code
                prefix = "bad key: " if isinstance(exc, InvalidKeyError) else ""
                return prefix + str(exc), code
        return f"{exc} ({type(exc).__name__})", commands.EXIT_UNEXPECTED
    if _locked(exc):
        return (
            "the database is locked by another process; try again when it is free",
            commands.EXIT_STORE,
        )
    kind_name = type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        # SQLite's own messages name the failure, never a stored value.
        if "readonly" in str(exc).lower():
            return (
                f"the store cannot be written ({safe(exc)}): this user cannot write the "
                "database file, its directory or its -wal/-shm files. inspect, verify and "
                "export read a store without writing to it",
                commands.EXIT_STORE,
            )
        return f"cannot use the database ({kind_name}: {safe(exc)})", commands.EXIT_STORE
    if isinstance(exc, OSError):
        where = f" {safe(repr(exc.filename))}" if exc.filename else " the database"
        return f"cannot use{where} ({kind_name}: {exc.strerror})", commands.EXIT_STORE
    if kind_name in ("OperationalError", "InterfaceError"):
        return f"cannot use the database ({kind_name})", commands.EXIT_STORE
    return f"unexpected error ({kind_name}); run again with --debug", commands.EXIT_UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
