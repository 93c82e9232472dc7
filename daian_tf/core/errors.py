"""Errors raised for bad input. The CLI prints these as one clear line (exit 2)."""

from __future__ import annotations

from typing import Optional


class DaianInputError(ValueError):
    """Input that the project refuses, with a message naming what is wrong."""


class RawLogError(DaianInputError):
    """A raw-log file breaks a rule of spec/DATA.md §1.

    The message names the file, the row (1-based line number in the file, header = 1)
    and the column wherever they are known.
    """

    def __init__(self, message: str, file: Optional[str] = None,
                 row: Optional[int] = None, column: Optional[str] = None):
        self.file, self.row, self.column = file, row, column
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ExampleContractError(DaianInputError):
    """Built training examples break the example contract (spec/DATA.md §2).

    Raised by the pipeline's ExampleValidator when the examples' statistics show an
    anomaly against the contract schema; the message names each split, feature and
    anomaly, one per line. `problems` holds them as (split, feature, anomaly) tuples.
    """

    def __init__(self, message: str, problems=()):
        self.problems = tuple(problems)
        super().__init__(message)
