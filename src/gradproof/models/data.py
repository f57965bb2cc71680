"""Labelled transactions and their stratified split into training, validation and test sets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.errors import InputError

__all__ = ["PaymentData", "split"]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentData:
    """Labelled examples: a feature matrix, 0/1 labels and the features' names.

    Parameters
    ----------
    X : numpy.ndarray of shape (m, n_features)
        One example per row; stored as a read-only float64 copy.
    y : numpy.ndarray of shape (m,)
        1 for fraud, 0 for a legitimate transaction; stored as a read-only int64 copy.
    feature_names : tuple of str
        The name of each column of `X`.

    Raises
    ------
    InputError
        If the shapes disagree, `X` is not finite, or `y` holds values other
        than 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> data = PaymentData(X=np.eye(2), y=np.array([0, 1]), feature_names=("a", "b"))
    >>> data.n, data.n_positive, data.fraud_rate
    (2, 1, 0.5)
    """

    X: FloatArray
    y: IntArray
    feature_names: tuple[str, ...]

    def __post_init__(self) -> None:
        X = np.array(self.X, dtype=np.float64)
        y = np.array(self.y)
        names = tuple(str(name) for name in self.feature_names)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise InputError(
                f"`X` has shape {X.shape}; expected (m, {len(names)}), one column per name in "
                "`feature_names`."
            )
        if y.shape != (X.shape[0],):
            raise InputError(
                f"`y` has shape {y.shape}; expected ({X.shape[0]},), one label per row of `X`."
            )
        if not np.all((y == 0) | (y == 1)):
            raise InputError("`y` must hold only 0 and 1 (1 = fraud); convert the labels first.")
        if not np.all(np.isfinite(X)):
            row, col = np.argwhere(~np.isfinite(X))[0]
            raise InputError(
                f"`X` must be finite, but row {row}, column {names[col]!r} is {X[row, col]}; "
                "impute or drop missing values first."
            )
        labels = y.astype(np.int64)
        for array in (X, labels):
            array.setflags(write=False)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", labels)
        object.__setattr__(self, "feature_names", names)

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features (columns of `X`)."""
        return int(self.X.shape[1])

    @property
    def n_positive(self) -> int:
        """Number of frauds (labels equal to 1)."""
        return int(self.y.sum())

    @property
    def fraud_rate(self) -> float:
        """Fraction of examples labelled 1 (0 for no examples)."""
        return self.n_positive / self.n if self.n else 0.0

    def subset(self, rows: npt.ArrayLike) -> PaymentData:
        """Return the examples at `rows` (integer indices), in that order.

        Parameters
        ----------
        rows : array_like of int
            Row indices.

        Returns
        -------
        PaymentData
            The selected examples, with the same feature names.
        """
        index = np.asarray(rows, dtype=np.intp)
        return PaymentData(X=self.X[index], y=self.y[index], feature_names=self.feature_names)


def split(
    data: PaymentData,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: bool = True,
) -> tuple[PaymentData, PaymentData, PaymentData]:
    """Split examples at random into training, validation and test sets.

    Parameters
    ----------
    data : PaymentData
        The examples.
    fractions : tuple of three floats, default (0.7, 0.15, 0.15)
        The share of the examples in each part; positive, summing to 1.
    seed : int, default 0
        Seed of the shuffle.
    stratify : bool, default True
        Split the frauds and the legitimate transactions separately, so that
        every part has (up to rounding) the same fraud rate. With a fraud rate
        of 1-2 %, an unstratified split can leave a part with few or no frauds.

    Returns
    -------
    train, val, test : PaymentData
        The three parts, each in a random order; every example is in exactly one.

    Raises
    ------
    InputError
        If `fractions` is not three positive numbers summing to 1.

    Examples
    --------
    >>> from gradproof.models import make_payments
    >>> train, val, test = split(make_payments(2_000, seed=0))
    >>> train.n, val.n, test.n
    (1400, 300, 300)
    """
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or not np.all(shares > 0) or not np.isclose(shares.sum(), 1.0):
        raise InputError(
            f"`fractions` must be three positive numbers summing to 1 (train, validation, "
            f"test); got {fractions!r}. Use e.g. (0.7, 0.15, 0.15)."
        )
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(data.y == label) for label in (0, 1)] if stratify else [np.arange(data.n)]
    )
    parts: list[list[IntArray]] = [[], [], []]
    for group in groups:
        shuffled = rng.permutation(group)
        cuts = np.round(np.cumsum(shares)[:2] * len(group)).astype(np.int64)
        for part, rows in zip(parts, np.split(shuffled, cuts), strict=True):
            part.append(rows)
    train, val, test = (data.subset(rng.permutation(np.concatenate(rows))) for rows in parts)
    return train, val, test
