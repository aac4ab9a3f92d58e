"""Child process of the reliability tests: writes numbered turns and reports each commit.

    python -m tests._crash_writer DB SESSION_ID KEY FIRST_TURN [TURNS] [WRITER]

Writes turns FIRST_TURN, FIRST_TURN+1, ... (4 items each, one ``add_items`` call per turn)
through ``EncryptedSession(SQLiteSession(...))`` and prints ``committed N`` (flushed) after
each ``add_items`` returns; ``ready`` once the database is open. With TURNS it stops after
that many turns and prints ``done``; an error is printed as ``error <type>: <message>`` and
the writer goes on (the parent counts them). The crash test kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from encmem.backends import SQLiteSession

from encmem import EncryptedSession

PARTS = ("user", "function_call", "function_call_output", "assistant")


def turn_items(writer: str, turn: int) -> list[dict[str, Any]]:
    """The 4 items of one turn; each says which writer, turn and part it is."""
    tag = {"writer": writer, "turn": turn}
    return [
        {"role": "user", "content": f"question {turn} from {writer}", **tag, "part": 0},
        {
            "type": "function_call",
            "name": "lookup",
            "call_id": f"c{writer}-{turn}",
            "arguments": "{}",
            **tag,
            "part": 1,
        },
        {
            "type": "function_call_output",
            "call_id": f"c{writer}-{turn}",
            "output": "x" * 200,
            **tag,
            "part": 2,
        },
        {"role": "assistant", "content": f"answer {turn}", **tag, "part": 3},
    ]


async def main(argv: list[str]) -> int:
    db, session_id, key, first = argv[0], argv[1], argv[2], int(argv[3])
    turns = int(argv[4]) if len(argv) > 4 and argv[4] != "-" else None
    writer = argv[5] if len(argv) > 5 else "w"
    session = EncryptedSession(
        session_id=session_id,
        underlying_session=SQLiteSession(session_id, db),
        encryption_key=key,
        ttl=None,
    )
    await session.get_items(1)  # the connection is open and the schema exists
    print("ready", flush=True)
    if len(argv) > 6:  # a start file: wait until the parent creates it, so writers overlap
        import os

        while not os.path.exists(argv[6]):
            await asyncio.sleep(0.005)
    turn = first
    while turns is None or turn < first + turns:
        try:
            await session.add_items(turn_items(writer, turn))
        except Exception as exc:  # reported to the parent, which fails the test
            print(f"error {type(exc).__name__}: {exc}", flush=True)
        else:
            print(f"committed {turn}", flush=True)
        turn += 1
    await session.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
