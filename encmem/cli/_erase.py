"""``encmem erase``: shred a session's seed, delete its rows, and say exactly what is left.

The work is :func:`encmem.erase_session`'s (and :func:`encmem.erase_idle_sessions`'s); this
module asks for confirmation, prints the receipt as lines or as JSON, and picks the exit
code: 0 when the erase is complete, 6 while old pages wait for other readers to finish, 1
when the byte scan still finds copies (or the erase was not confirmed).
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from typing import Any, TextIO

from .. import _erasure as erasure
from .._erasure import ErasureReceipt
from .._protocol import KeyStore, SessionStore
from ..errors import CommandError
from ._diagnosis import EXIT_FINDINGS, EXIT_STORE, plural
from ._progress import ProgressBar
from ._report import safe

EXIT_OK = 0
EXIT_PENDING = 6
EXIT_INTERRUPTED = 130
SAME_STORE = "the session store"

Report = dict[str, Any]
"""``lines`` (printed), ``json`` (printed with --json) and ``warning`` (stderr), if any."""


def confirm(session_id: str, items: int, stdin: TextIO = sys.stdin) -> bool:
    """Ask on the terminal; without one, refuse (``--yes`` is the way to say yes)."""
    if not stdin.isatty():
        return False
    prompt = (
        f"Erase every row of session {session_id!r} ({plural(items, 'item')}) for good? "
        "Type the session id to confirm: "
    )
    return _ask(prompt, stdin) == session_id


def _ask(prompt: str, stdin: TextIO) -> str:
    """One line from the terminal; Ctrl-C there stops the command before anything is erased.

    The event loop's own SIGINT handler only cancels the task, which a blocking read never
    notices: Python's default handler is put back from before the prompt to the answer."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main else None
    try:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return stdin.readline().strip()
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        raise CommandError("interrupted; nothing was erased", EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# -- a receipt, in words ---------------------------------------------------------------------


def _rows(receipt: Report) -> tuple[int, str]:
    """Rows removed, in all and per table. A seed kept in the session store went first, with
    its row (the receipt counts it as the seed destroyed): it is counted with the rows."""
    rows = dict(receipt["rows_removed"])
    if receipt["seed_destroyed"] and receipt["key_store"] == SAME_STORE:
        rows["seed"] = rows.get("seed", 0) + 1
    per_table = ", ".join(f"{safe(table)} {count}" for table, count in rows.items())
    return sum(rows.values()), per_table


def _seed(receipt: Report, finish: bool) -> str:
    where = safe(receipt["key_store"])
    if receipt["seed_destroyed"]:
        return f"seed destroyed (key store: {where})"
    if receipt["key_store"] == "none":
        return "no key store, so no seed to destroy"
    return f"{'no seed left' if finish else 'no seed'} to destroy (key store: {where})"


def _copies(count: int) -> str:
    return f"{count} {'copy' if count == 1 else 'copies'}"


def _scan(receipt: Report) -> str:
    ids, tokens = receipt["session_id_hits"], receipt["ciphertext_hits"]
    if tokens is None and ids is None:
        return "no residue scan (the store is not a file this command can read byte by byte)"
    found = (
        "the session id is too short to look for"
        if ids is None
        else f"{_copies(ids)} of the session id"
    )
    if tokens is None:
        return f"residue scan: {found}; no rows were left to take its ciphertexts from"
    return f"residue scan: {found}, {tokens} of its ciphertexts"


def receipt_line(receipt: Report, finish: bool = False) -> str:
    """One line that says what the erase did and what the scan found, never more."""
    total, per_table = _rows(receipt)
    shown = safe(repr(receipt["session_id"]))
    rows = plural(total, "more row" if finish else "row") + " removed"
    if per_table:
        rows += f" ({per_table})"
    head = f"erase of session {shown} finished" if finish else f"erased session {shown}"
    return f"{head}: {rows}, {_seed(receipt, finish)}, {safe(receipt['residue'])}; {_scan(receipt)}"


def _pending_warning(receipt: Report) -> str:
    total, _ = _rows(receipt)
    done = plural(total, "row") + " removed"
    if receipt["seed_destroyed"]:
        done += " and seed destroyed"
    notes = "".join(f" ({safe(note)})" for note in receipt["notes"])
    finish = safe(shlex.quote(receipt["session_id"]))
    return (
        f"session {safe(repr(receipt['session_id']))}: {done}; old pages remain in the WAL "
        f"until other readers finish{notes}: run `encmem erase DB --session {finish} "
        "--finish` once they are done"
    )


def _unclean_warning(receipt: Report) -> str:
    return (
        f"session {safe(repr(receipt['session_id']))}: the rows are removed, yet the residue "
        f"scan still finds {_copies(receipt['session_id_hits'] or 0)} of the session id and "
        f"{_copies(receipt['ciphertext_hits'] or 0)} of its ciphertexts in the store's files: "
        "the erase is not complete (the receipt says so)"
    )


def _outcome(receipts: list[ErasureReceipt]) -> tuple[int, str | None]:
    """The exit code and the warning for stderr, from the receipts."""
    pending = [r for r in receipts if r.residue_pending]
    if pending:
        return EXIT_PENDING, "; ".join(_pending_warning(r.as_dict()) for r in pending)
    unclean = [r for r in receipts if not r.complete]
    if unclean:
        return EXIT_FINDINGS, "; ".join(_unclean_warning(r.as_dict()) for r in unclean)
    return EXIT_OK, None


# -- the commands -------------------------------------------------------------------------


async def erase(
    store: SessionStore,
    session_id: str,
    yes: bool,
    *,
    finish: bool = False,
    key_store: KeyStore | None = None,
) -> tuple[int, Report]:
    """Erase one session (asking first unless ``yes``); with ``finish``, erase it again to
    complete an erase that exited 6 (nothing is left to delete; the WAL is emptied)."""
    if not finish:
        if session_id not in await store.session_ids():
            raise CommandError(f"no session {session_id!r} in this store", EXIT_STORE)
        items = len(await store.session(session_id).get_stored_items(None))
        if not yes and not confirm(session_id, items):
            raise CommandError(
                "not confirmed; nothing was erased (pass --yes to erase without asking)",
                EXIT_FINDINGS,
            )
    receipt = await erasure.erase_session(store, session_id, key_store=key_store)
    code, warning = _outcome([receipt])
    shown = receipt.as_dict()
    lines = [] if code == EXIT_PENDING else [receipt_line(shown, finish)]
    return code, {"lines": lines, "json": shown, "warning": warning}


async def erase_idle(
    store: SessionStore,
    idle_seconds: float,
    yes: bool,
    *,
    duration: str,
    key_store: KeyStore | None = None,
) -> tuple[int, Report]:
    """Every session with no write in ``idle_seconds``: listed (a dry run) unless ``yes``,
    else erased one by one, with a progress bar and a receipt each."""
    if not yes:
        chosen = [
            str(sid) for sid in await erasure.erase_idle_sessions(store, idle_seconds, dry_run=True)
        ]
        summary = (
            f"{plural(len(chosen), 'session')} idle longer than {safe(duration)} would be "
            "erased (dry run: nothing was changed; pass --yes to erase them)"
        )
        listed = {"dry_run": True, "idle_seconds": idle_seconds, "sessions": len(chosen)}
        return EXIT_OK, {
            "lines": [safe(sid) for sid in chosen] + [summary],
            "json": {**listed, "session_ids": chosen},
        }
    bar = ProgressBar("erase", unit="sessions")
    try:
        found = await erasure.erase_idle_sessions(
            store, idle_seconds, key_store=key_store, dry_run=False, progress=bar
        )
    finally:
        bar.finish()
    receipts = [r for r in found if isinstance(r, ErasureReceipt)]
    code, warning = _outcome(receipts)
    as_dicts = [r.as_dict() for r in receipts]
    summary = f"erased {plural(len(receipts), 'session')} idle longer than {safe(duration)}"
    pending = sum(r.residue_pending for r in receipts)
    if pending:
        summary += f"; {pending} with old pages pending in the WAL (see below)"
    return code, {
        "lines": [receipt_line(r) for r in as_dicts] + [summary],
        "json": {
            "dry_run": False,
            "idle_seconds": idle_seconds,
            "sessions": len(receipts),
            "receipts": as_dicts,
        },
        "warning": warning,
    }


def duration_text(seconds: float) -> str:
    """A duration as the options take it: 30d, 12h, 90m, 2w, or seconds."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
