"""``encmem export``: one session's items, decrypted, as JSON Lines (for access requests).

Decrypted content goes only where it was asked to go: to stdout, or into a new file that
only its owner can read (mode 0600 from the moment it exists; an existing file is replaced
only with ``--force``). No temporary copy is written anywhere. A reader that stops reading
(``encmem export ... | head``) ends the output quietly, as ``cat`` does.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .._keys import Keyring
from .._protocol import KeyStore, SessionStore
from ..errors import CommandError
from ._diagnosis import EXIT_STORE, Diagnosis, plural
from ._walk import all_items, iso

EXIT_USAGE = 2
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


class Output:
    """Lines to stdout or to a file; a closed pipe stops the output without an error."""

    def __init__(self, stream: TextIO, path: str | None = None) -> None:
        self.stream = stream
        self.path = path
        self.closed = False

    def write(self, text: str) -> bool:
        """Write ``text``; False once the reader has gone (nothing more will be written)."""
        if not self.closed:
            self._guarded(self.stream.write, text)
        return not self.closed

    def flush(self) -> None:
        self._guarded(self.stream.flush)

    def _guarded(self, action: Callable[..., object], *args: str) -> None:
        """Run one stream call: a closed pipe ends the output quietly, other errors name it."""
        try:
            action(*args)
        except BrokenPipeError:
            self._reader_gone()
        except OSError as exc:
            if self.path is None:
                self._reader_gone()  # what is still buffered must not fail again at exit
                where = "to standard output"
            else:
                where = f"the output file {self.path!r}"
            raise CommandError(f"cannot write {where}: {exc.strerror}", EXIT_USAGE) from None

    def _reader_gone(self) -> None:
        self.closed = True
        silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing written later meets the closed pipe."""
    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file: nothing will flush into a pipe
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fileno)
    finally:
        os.close(devnull)


def _non_file_kind(path: str) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a symbolic link
    (never followed), else None."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "neither a file nor a link"


def open_private(path: str, force: bool) -> Output:
    """A new file at ``path`` that only its owner can read, created at once with mode 0600."""
    kind = _non_file_kind(path)
    if kind == "a directory":
        raise CommandError(f"the output path {path!r} is a directory; name a file", EXIT_USAGE)
    if kind is not None and force:
        raise CommandError(
            f"the output path {path!r} is {kind}, not a regular file; --force replaces only "
            "a regular file or a symbolic link, so it was left as it is and nothing was written",
            EXIT_USAGE,
        )
    try:
        if force and os.path.lexists(path):
            os.unlink(path)  # a new file, never the old one's permissions or links
    except OSError as exc:
        raise CommandError(f"cannot replace {path!r}: {exc.strerror}", EXIT_USAGE) from None
    try:
        fd = os.open(path, _CREATE, 0o600)
    except FileExistsError:
        raise CommandError(
            f"the output file {path!r} exists; nothing was written (pass --force to replace it)",
            EXIT_USAGE,
        ) from None
    except OSError as exc:
        raise CommandError(
            f"cannot create the output file {path!r}: {exc.strerror}", EXIT_USAGE
        ) from None
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)  # whatever the umask: owner read and write, nobody else
    return Output(os.fdopen(fd, "w", encoding="utf-8"), path)


def stdout_is_shared_file() -> str | None:
    """The mode of stdout when it is a regular file that others may read, else None."""
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) and mode & (stat.S_IRGRP | stat.S_IROTH):
        return oct(stat.S_IMODE(mode))[2:].rjust(4, "0")
    return None


async def export_session(
    store: SessionStore,
    keyring: Keyring,
    session_id: str,
    destination: Callable[[], Output],
    key_store: KeyStore | None = None,
) -> tuple[int, dict[str, Any]]:
    """Decrypt the session, then write it: a session none of whose items opens leaves no file."""
    if session_id not in await store.session_ids():
        raise CommandError(f"no session {session_id!r} in this store", EXIT_STORE)
    diagnosis = Diagnosis(keyring, key_store=key_store)
    await diagnosis.book.load(store, session_id)
    lines: list[str] = []
    for stored in await all_items(store.session(session_id)):
        opened = diagnosis.open(session_id, stored)
        if opened is not None:
            line = {
                "session_id": session_id,
                "branch_id": stored[0],
                "storage_id": stored[1],
                "sealed_at": iso(opened.sealed_at),
                "item": opened.item,
            }
            lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    await diagnosis.vouch(store)  # a key id that opens items elsewhere is not a wrong key
    diagnosis.settle()
    unopened = diagnosis.unopened()
    if unopened and not lines:
        raise CommandError(
            f"nothing was exported from session {session_id!r}: " + "; ".join(diagnosis.causes()),
            diagnosis.exit_code(),
        )
    out = destination()
    written = 0
    try:
        for text in lines:
            if not out.write(text):
                break
            written += 1
        out.flush()
    finally:
        if out.path is not None:
            out.stream.close()
    report: dict[str, Any] = {
        "session_id": session_id,
        "exported": written,
        "unreadable": unopened,
    }
    if out.closed:
        report["output_closed"] = True
    elif unopened:
        raise CommandError(
            f"{plural(unopened, 'item')} of session {session_id!r} "
            f"{'was' if unopened == 1 else 'were'} not exported: "
            + "; ".join(diagnosis.causes())
            + f". The other {written} were exported"
            + (f" to {out.path!r} (decrypted content, mode 0600)" if out.path else ""),
            diagnosis.exit_code(),
        )
    return 0, report
