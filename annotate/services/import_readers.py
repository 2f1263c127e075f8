"""Reading import files: CSV and JSONL byte streams to (where, row) pairs.

Streamed, strict UTF-8 with the offending line named; `where` is "row N"
(CSV, counting data rows) or "line N" (JSONL), for error messages.
"""
from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import IO, Any, Iterator

from django.conf import settings

from annotate.errors import WorkbenchError


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
    for number, raw in enumerate(stream, start=1):
        try:
            yield decoder.decode(raw)
        except UnicodeDecodeError as exc:
            raise FatalFileError(
                f"line {number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "save the file as UTF-8"
            ) from None


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    limit = settings.IMPORT_MAX_FIELD_CHARS
    csv.field_size_limit(max(limit * 10, 1_000_000))
    reader = csv.reader(_decoded_lines(stream))
    try:
        header = next(reader)
    except StopIteration:
        raise FatalFileError("the file is empty") from None
    except csv.Error as exc:
        raise FatalFileError(f"row 0 (header): {exc}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise FatalFileError("the header row is empty")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise FatalFileError(f"header: column {repeated[0]!r} appears more than once")
    number = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise FatalFileError(f"row {number + 1}: {exc}") from None
        number += 1
        if not values:
            continue
        if len(values) != len(header):
            yield f"row {number}", {"__error__": f"has {len(values)} fields; the header has {len(header)}"}
            continue
        yield f"row {number}", dict(zip(header, values))


def _jsonl_rows(stream: IO[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(_decoded_lines(stream), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {number}", {"__error__": f"not valid JSON ({exc.msg} at column {exc.colno})"}
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
