"""The values the command's options take, checked as argparse parses them: a bad one is a
usage error (exit 2) that says what to write instead."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from .._keys import check_kid
from .._options import MIN_TTL_SECONDS
from ..backends._identifiers import check_table_name
from ..errors import InvalidKeyError
from ._report import safe

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' or plain seconds; at least one second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write e.g. 30d, 12h, 90m, 45s or seconds"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < MIN_TTL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is under {MIN_TTL_SECONDS} second: seal times are whole seconds, so "
            "a shorter duration cannot be told apart; write 1s or more"
        )
    return seconds


def table_name(option: str) -> Callable[[str], str]:
    """An argparse type for a table option: a plain SQL identifier, as the backends demand."""

    def parse(text: str) -> str:
        try:
            return check_table_name(text, option)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(safe(exc)) from None

    return parse


def busy_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(
            f"{safe(repr(text))} is not a number of seconds; write a finite number, 0 or more"
        )
    return seconds


def out_path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the path is empty: name a file, or leave out --out")
    return text


def key_id(text: str) -> str:
    """A key id for keygen; an invalid one is refused without being repeated."""
    try:
        return check_kid(text)
    except InvalidKeyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)
