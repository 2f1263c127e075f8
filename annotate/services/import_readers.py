"""Reading import files: CSV and JSONL byte streams to (where, row) pairs.

Streamed, strict UTF-8 with the offending line named; `where` is "row N"
(CSV, counting data rows) or "line N" (JSONL), for error messages.
"""
from __future__ import annotations

import codecs
import csv
import json
import sys
from pathlib import Path
from typing import IO, Any, Iterator

from django.conf import settings

from annotate.errors import WorkbenchError

# A column (CSV header) or field (JSONL key) name longer than this is refused: names are shown
# in every error message and stored with each item.
MAX_COLUMN_NAME_CHARS = 200


class FatalFileError(Exception):
    """The file cannot be read on: bad encoding, no header, broken CSV."""


def detect_format(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise WorkbenchError(f"cannot tell the format of {name!r}: use a .csv or .jsonl file, or name the format")


def _decoded_lines(stream: IO[bytes]) -> Iterator[str]:
    """Lines of a binary stream decoded as strict UTF-8, naming the line of a bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    number = 0
    for number, raw in enumerate(stream, start=1):
        try:
            yield decoder.decode(raw)
        except UnicodeDecodeError as exc:
            raise FatalFileError(
                f"line {number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "save the file as UTF-8"
            ) from None
    try:  # the decoder holds back the bytes of a character cut off by the end of the file
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FatalFileError(
            f"line {number}: the file ends in the middle of a UTF-8 character (cut off?); "
            "nothing was imported, upload the whole file"
        ) from None


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    limit = settings.IMPORT_MAX_FIELD_CHARS
    csv.field_size_limit(max(limit * 10, 1_000_000))
    # strict: a quote left open at the end of the file, or text after a closing quote, is an
    # error instead of a field silently ended or a quote silently dropped.
    reader = csv.reader(_decoded_lines(stream), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise FatalFileError("the file is empty") from None
    except csv.Error as exc:
        raise FatalFileError(f"row 0 (header): {_csv_problem(exc, 1)}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise FatalFileError("the header row is empty")
    for position, name in enumerate(header, start=1):
        if len(name) > MAX_COLUMN_NAME_CHARS:
            raise FatalFileError(
                f"header: column {position} ({name[:40]!r}...) has a name of {len(name):,} characters; "
                f"the limit is {MAX_COLUMN_NAME_CHARS}"
            )
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise FatalFileError(f"header: column {repeated[0]!r} appears more than once")
    number = 0
    while True:
        first_line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise FatalFileError(f"row {number + 1}: {_csv_problem(exc, first_line)}") from None
        number += 1
        if not values:
            continue
        if len(values) != len(header):
            yield f"row {number}", {"__error__": f"has {len(values)} fields; the header has {len(header)}"}
            continue
        yield f"row {number}", dict(zip(header, values))


def _csv_problem(exc: csv.Error, first_line: int) -> str:
    """csv's message, with the line where the broken record starts."""
    if "unexpected end of data" in str(exc):
        return (f"the record starting on line {first_line} has a quoted field that is not closed before the end "
                'of the file; add the missing closing "')
    return f"{exc} (in the record starting on line {first_line})"


def _jsonl_rows(stream: IO[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(_decoded_lines(stream), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {number}", {"__error__": f"not valid JSON ({exc.msg} at column {exc.colno})"}
            continue
        except RecursionError:  # the parser recurses once per level of [ or {
            yield f"line {number}", {"__error__": "is nested too deeply to read (hundreds of levels of [ or {); "
                                                   "fields must be single values"}
            continue
        except ValueError as exc:  # json turns digits into an int, which Python limits (sys.get_int_max_str_digits)
            if "integer string conversion" not in str(exc):
                raise
            yield f"line {number}", {"__error__": f"has a number of more than {sys.get_int_max_str_digits():,} "
                                                   "digits; write it as a string, or round it"}
            continue
        if not isinstance(value, dict):
            yield f"line {number}", {"__error__": f"must be a JSON object, not {type(value).__name__}"}
            continue
        yield f"line {number}", value


def read_rows(stream: IO[bytes], file_format: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, row) from a binary stream; `where` is "row N" or "line N"."""
    if file_format == "csv":
        return _csv_rows(stream)
    if file_format == "jsonl":
        return _jsonl_rows(stream)
    raise WorkbenchError(f"unknown import format {file_format!r}; use csv or jsonl")


def rows_estimate(path, file_format: str) -> int:
    """About how many rows the file holds, for a progress bar: its line count (less a CSV header).

    Exact for JSONL without blank lines; a CSV with newlines inside quoted
    fields reads as more rows than it has, so progress may end below 100%.
    """
    lines, last = 0, b"\n"
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without a newline
    return max(0, lines - (file_format == "csv"))
