"""Decoding stored (id, JSON text) rows, shared by the SQL backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from encmem.items import decode_item
from encmem.protocol import StoredItem


def decode_rows(rows: Sequence[Any], session_id: str, logger: logging.Logger) -> list[StoredItem]:
    """Newest-first (id, json) rows in, oldest-first items out; rows that are not JSON objects
    are skipped with a warning naming the row, never its content."""
    decoded: list[StoredItem] = []
    for row_id, data in reversed(rows):
        item = decode_item(data)
        if item is None:
            report_bad_row(logger, "skipped", session_id, row_id)
            continue
        decoded.append(StoredItem(int(row_id), item))
    return decoded


def report_bad_row(logger: logging.Logger, what: str, session_id: str, row_id: int) -> None:
    """Say that a row which is not a JSON object was skipped or dropped; never its content."""
    logger.warning(
        "%s a stored row that is not a JSON object (session %r, id %d)", what, session_id, row_id
    )
