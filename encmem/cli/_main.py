"""The ``encmem`` command: look at, audit and maintain encrypted session stores.

Exit codes follow the type of the error (``_EXIT_BY_TYPE``), never its wording: 0 success;
1 findings; 2 usage; 3 keys; 4 the store; 5 unexpected (the epilog below says more). inspect,
verify, head, export and dry runs open the store read-only. Reference: docs/cli.md.
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
from .._protocol import KeyStore, SessionStore
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
from ._erase import duration_text
from ._export import Output, open_private, silence_stdout
from ._history_audit import history_heads
from ._key_store import OpenedKeyStore, open_key_store
from ._parser import build_parser
from ._report import export_notice, print_report, safe

_READ_ONLY_COMMANDS = ("inspect", "verify", "head", "export")


def _lists_idle(args: argparse.Namespace) -> bool:
    """``erase --idle-longer-than`` without ``--yes``: a dry run that lists the sessions."""
    return args.command == "erase" and args.idle_longer_than is not None and not args.yes


def _reads_only(args: argparse.Namespace) -> bool:
    """inspect, verify, head, export, every --dry-run and the listing of idle sessions open
    the store read-only: they change nothing, and work on read-only files in read-only
    directories."""
    dry = bool(getattr(args, "dry_run", False))
    return args.command in _READ_ONLY_COMMANDS or dry or _lists_idle(args)


async def _erase(
    args: argparse.Namespace, store: SessionStore, key_store: KeyStore | None
) -> tuple[int, dict[str, Any]]:
    if args.idle_longer_than is not None:
        return await commands.erase_idle(
            store,
            args.idle_longer_than,
            args.yes,
            duration=duration_text(args.idle_longer_than),
            key_store=key_store,
        )
    return await commands.erase(
        store, args.session, args.yes, finish=args.finish, key_store=key_store
    )


async def _dispatch(
    args: argparse.Namespace,
    store: SessionStore,
    keyring: Keyring | None,
    key_store: KeyStore | None = None,
) -> tuple[int, dict[str, Any]]:
    if args.command == "inspect":
        return await commands.inspect_store(store, keyring, args.ttl, key_store)
    if args.command == "erase":
        return await _erase(args, store, key_store)
    assert keyring is not None
    if args.command == "verify":
        return await commands.verify_store(store, keyring, args.ttl, args.head, key_store)
    if args.command == "head":
        return await history_heads(store, keyring, args.session, args.branch, key_store)
    if args.command == "export":
        out_path = args.out

        def destination() -> Output:
            return open_private(out_path, args.force) if out_path else Output(sys.stdout)

        return await commands.export_session(store, keyring, args.session, destination, key_store)
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
        key_store=key_store,
        shred_ready=getattr(args, "shred_ready", False),
    )


async def _preflight(
    args: argparse.Namespace,
    store: SessionStore,
    keyring: Keyring | None,
    key_store: KeyStore | None,
) -> None:
    """What a command that writes would refuse, found on the store opened read-only, so
    that a refusal changes nothing (opening a store to write switches a SQLite file to WAL)."""
    if args.command == "erase":
        if args.session is None or args.finish:
            return
        if args.session not in await store.session_ids():
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
        count_chains=False,  # the report of this pass is not shown
        key_store=key_store,
        shred_ready=getattr(args, "shred_ready", False),
    )


def _check_options(args: argparse.Namespace) -> None:
    """Option combinations argparse cannot refuse by itself: a usage error (exit 2)."""
    from ..backends._pg_url import url_parameter_problem

    if args.command == "erase" and args.finish and args.session is None:
        raise CommandError(
            "--finish completes the erase of one session: add --session ID", commands.EXIT_USAGE
        )
    for option, target in (("", args.db), ("--key-store ", args.key_store)):
        if target is not None and (problem := url_parameter_problem(target)) is not None:
            raise CommandError(f"the {option}URL cannot be used: {problem}", commands.EXIT_USAGE)


async def _open_key_store(args: argparse.Namespace) -> OpenedKeyStore | None:
    if args.key_store is None:
        return None
    creates = args.command == "encrypt" or (args.command == "rotate" and args.shred_ready)
    return await open_key_store(
        args.key_store,
        read_only=_reads_only(args),
        may_create=creates,
        busy_timeout=args.busy_timeout,
    )


async def _run(args: argparse.Namespace) -> int:
    keyring = None
    if args.command != "erase":
        needs_keys = args.command != "inspect"
        if needs_keys or args.key_file or _env_has_keys():
            keyring = commands.load_keyring(args.key_file)
    _check_options(args)
    opened = await _open_key_store(args)
    try:
        code, report = await _on_store(args, keyring, opened.store if opened else None)
    finally:
        if opened is not None:
            await opened.close()
    if args.command != "export":
        print_report(args.command, report, args.json)
        if report.get("warning"):
            sys.stderr.write(f"encmem {args.command}: {report['warning']}\n")
    elif report.get("output_closed"):
        pass  # the reader stopped reading: nothing more to say, as cat says nothing
    elif args.json and args.out is None:
        sys.stderr.write(json.dumps(report) + "\n")
    elif args.json:
        print_report(args.command, report, True)
    else:
        sys.stderr.write(export_notice(report, args.out) + "\n")
    return code


async def _on_store(
    args: argparse.Namespace, keyring: Keyring | None, key_store: KeyStore | None
) -> tuple[int, dict[str, Any]]:
    """Open the store, run the command on it, close it: the exit code and the report."""
    from ..backends import open_store

    # A read without locks (a WAL file with no log beside it) of a file a writer changed
    # meanwhile is refused when the store closes; a report not yet printed is made again.
    rereads = 5 if _reads_only(args) and args.command != "export" else 0
    while True:
        store = await open_store(
            args.db,
            sessions_table=args.sessions_table,
            messages_table=args.messages_table,
            busy_timeout=args.busy_timeout,
            read_only=_reads_only(args),
            preflight=lambda probe: _preflight(args, probe, keyring, key_store),
        )
        failure: Exception | None = None
        try:
            result = await _dispatch(args, store, keyring, key_store)
        except Exception as exc:  # what a read of a file changing under it may raise
            failure = exc
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
        if failure is not None:
            raise failure
        return result


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
    if args.command == "schema":
        from ._schema import print_schema

        return print_schema(args)
    return asyncio.run(_run(args))


def _interrupted(command: str) -> str:
    if command in ("purge", "rotate", "encrypt"):
        return "interrupted; every finished batch is committed, run again to go on"
    if command == "erase":
        return "interrupted; every session erased so far is erased, run again to go on"
    return "interrupted"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
