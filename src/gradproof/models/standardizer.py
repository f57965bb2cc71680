"""Feature standardisation, fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.errors import InputError

__all__ = ["Standardizer"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Standardizer:
    """Centre each feature on its training mean and scale it by its training spread.

    Fit it on the training split alone and apply it to every split: statistics
    taken from validation or test data would leak them into training.

    Attributes
    ----------
    mean : numpy.ndarray of shape (n_features,)
        The training mean of each feature (read-only).
    scale : numpy.ndarray of shape (n_features,)
        The training standard deviation of each feature, or 1 where it is 0
        (a constant feature is only centred); read-only.

    Examples
    --------
    >>> import numpy as np
    >>> scaler = Standardizer.fit(np.array([[0.0, 5.0], [2.0, 5.0]]))
    >>> scaler.mean.tolist(), scaler.scale.tolist()
    ([1.0, 5.0], [1.0, 1.0])
    >>> scaler.transform(np.array([[4.0, 6.0]])).tolist()
    [[3.0, 1.0]]
    """

    mean: FloatArray
    scale: FloatArray

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64)
        scale = np.array(self.scale, dtype=np.float64)
        if mean.ndim != 1 or scale.shape != mean.shape or not np.all(scale > 0):
            raise InputError(
                f"`mean` and `scale` must be 1-D of one length with `scale` > 0; got shapes "
                f"{mean.shape} and {scale.shape}. Build a Standardizer with Standardizer.fit(X)."
            )
        for array in (mean, scale):
            array.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)

    @classmethod
    def fit(cls, X: npt.ArrayLike) -> Standardizer:
        """Learn each feature's mean and standard deviation from `X`.

        Parameters
        ----------
        X : array_like of shape (m, n_features)
            The training examples, one per row; ``m >= 1``.

        Returns
        -------
        Standardizer
            The fitted transformation.

        Raises
        ------
        InputError
            If `X` is not a non-empty 2-D array of finite numbers.
        """
        Xa = np.asarray(X, dtype=np.float64)
        if Xa.ndim != 2 or Xa.shape[0] == 0 or not np.all(np.isfinite(Xa)):
            raise InputError(
                f"`X` must be a non-empty 2-D array of finite numbers, one example per row; got "
                f"shape {Xa.shape}. Fit on the training split's `X`."
            )
        std = Xa.std(axis=0)
        return cls(mean=Xa.mean(axis=0), scale=np.where(std > 0, std, 1.0))

    @property
    def n_features(self) -> int:
        """Number of features the transformation was fitted on."""
        return int(self.mean.shape[0])

    def transform(self, X: npt.ArrayLike) -> FloatArray:
        """Return ``(X - mean) / scale`` with the fitted statistics.

        Parameters
        ----------
        X : array_like of shape (m, n_features)
            Examples of any split, one per row.

        Returns
        -------
        numpy.ndarray of shape (m, n_features)
            The standardised examples (a new array).

        Raises
        ------
        InputError
            If `X` does not have the fitted number of columns.
        """
        Xa = np.asarray(X, dtype=np.float64)
        if Xa.ndim != 2 or Xa.shape[1] != self.n_features:
            raise InputError(
                f"`X` has shape {Xa.shape}; the standardizer was fitted on {self.n_features} "
                f"features, so expected (m, {self.n_features})."
            )
        out: FloatArray = (Xa - self.mean) / self.scale
        return out
