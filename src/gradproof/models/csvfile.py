"""Labelled transactions from and to CSV files, with messages that say which cell is wrong."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from gradproof.errors import InputError
from gradproof.models.data import PaymentData

__all__ = ["load_csv", "write_csv"]


def load_csv(path: str | os.PathLike[str], *, label: str = "is_fraud") -> PaymentData:
    r"""Read labelled examples from a CSV file with a header row.

    Every column other than `label` is a feature and must hold a finite
    number in every row; `label` must hold 0 (legitimate) or 1 (fraud).
    Blank lines are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        The file: comma-separated, UTF-8, the column names on the first line.
    label : str, default "is_fraud"
        The name of the label column.

    Returns
    -------
    PaymentData
        ``X`` with the feature columns in file order, ``y`` and the feature names.

    Raises
    ------
    InputError
        If the file is missing or empty, has no `label` column (the message
        lists the columns found) or no feature column, has a row of the wrong
        length, a value that is not a finite number (the message gives the
        line, the column and the value), or a label other than 0 and 1.

    See Also
    --------
    write_csv : The inverse.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tx.csv"
    >>> _ = path.write_text("amount,hour,is_fraud\n12.5,14,0\n900,3,1\n")
    >>> data = load_csv(path)
    >>> data.feature_names, data.y.tolist()
    (('amount', 'hour'), [0, 1])
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"`path` {str(file)!r} is not a file; check the name and directory.")
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next((row for row in reader if row), None)
        if header is None:
            raise InputError(
                f"{str(file)!r} is empty; expected a header row naming the columns (one of them "
                f"{label!r}), then one row per transaction."
            )
        names = [name.strip() for name in header]
        if label not in names:
            found = ", ".join(repr(name) for name in names)
            raise InputError(
                f"{str(file)!r} has no label column {label!r}; the columns found are: {found}. "
                "Pass `label=` with the name of the column that holds 0/1 fraud labels."
            )
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise InputError(f"{str(file)!r} repeats the column names {repeated}; rename them.")
        if len(names) < 2:
            raise InputError(
                f"{str(file)!r} has only the label column {label!r}; add feature columns."
            )
        label_at = names.index(label)
        rows, labels = [], []
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(names):
                raise InputError(
                    f"line {line} of {str(file)!r} has {len(row)} values but the header has "
                    f"{len(names)} columns; every row needs one value per column."
                )
            values = [
                _number(cell, line, name, file) for cell, name in zip(row, names, strict=True)
            ]
            if values[label_at] not in (0.0, 1.0):
                raise InputError(
                    f"the label column {label!r} must hold 0 or 1, but line {line} of "
                    f"{str(file)!r} has {row[label_at]!r}. Encode frauds as 1 and legitimate "
                    "transactions as 0."
                )
            labels.append(int(values.pop(label_at)))
            rows.append(values)
    features = tuple(name for name in names if name != label)
    if not rows:
        raise InputError(f"{str(file)!r} has a header but no data rows; add transactions.")
    return PaymentData(X=np.array(rows), y=np.array(labels), feature_names=features)


def _number(cell: str, line: int, column: str, file: Path) -> float:
    """Return the cell as a float, or raise an :class:`InputError` naming line and column."""
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
        problem = "an empty value" if not text else f"{cell!r}, which is not a number"
        fix = (
            "Fill in or drop missing values"
            if not text
            else "Encode text columns as numbers (e.g. one 0/1 column per category) or drop them"
        )
    else:
        if math.isfinite(value):
            return value
        problem, fix = f"{cell!r}, which is not finite", "Fill in or drop missing values"
    raise InputError(
        f"line {line} of {str(file)!r}, column {column!r}, has {problem}; every value must be "
        f"a finite number. {fix}."
    )


def write_csv(data: PaymentData, path: str | os.PathLike[str], *, label: str = "is_fraud") -> None:
    """Write labelled examples to a CSV file that :func:`load_csv` reads back exactly.

    Parameters
    ----------
    data : PaymentData
        The examples.
    path : str or os.PathLike
        The file to create or overwrite.
    label : str, default "is_fraud"
        The name of the label column, written last.

    Raises
    ------
    InputError
        If `label` is also the name of a feature.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from gradproof.models import make_payments
    >>> data = make_payments(100, seed=0)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "payments.csv"
    >>> write_csv(data, path)
    >>> bool((load_csv(path).X == data.X).all())
    True
    """
    if label in data.feature_names:
        raise InputError(f"`label` {label!r} is also a feature name; choose another `label`.")
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*data.feature_names, label])
        for features, target in zip(data.X.tolist(), data.y.tolist(), strict=True):
            writer.writerow([*(repr(value) for value in features), target])
