"""Classification metrics for imbalanced labels, in numpy: precision, recall, F1, ROC-AUC, PR-AUC.

Note [Ties]
    Scores are grouped by distinct value before the curves are built: a group
    of tied scores is one threshold, crossed all at once. ROC-AUC is then the
    trapezoidal area under the ROC curve, which equals the Mann-Whitney
    probability that a random fraud outscores a random legitimate example,
    counting ties as one half. PR-AUC is the average precision
    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds (no
    interpolation), as scikit-learn's ``average_precision_score``. Precision
    at a threshold that flags nothing is taken to be 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gradproof.models.data import PaymentData
    from gradproof.models.network import FraudNetwork
    from gradproof.models.standardizer import Standardizer

__all__ = [
    "Metrics",
    "average_precision",
    "best_f1_threshold",
    "evaluate",
    "precision_recall_f1",
    "roc_auc",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """How well a classifier separates frauds on one set of labelled examples.

    Attributes
    ----------
    precision : float
        Share of the flagged examples that are frauds (0 when none is flagged).
    recall : float
        Share of the frauds that are flagged.
    f1 : float
        Harmonic mean of precision and recall (0 when both are 0).
    roc_auc : float
        Area under the ROC curve (Note [Ties]).
    pr_auc : float
        Area under the precision-recall curve, as average precision; a
        classifier that guesses scores the fraud rate.
    threshold : float
        Probability at or above which an example is flagged.
    n : int
        Number of examples.
    n_positive : int
        Number of frauds among them.
    """

    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float
    threshold: float
    n: int
    n_positive: int

    def __str__(self) -> str:
        return (
            f"precision {self.precision:.3f}  recall {self.recall:.3f}  F1 {self.f1:.3f}  "
            f"ROC-AUC {self.roc_auc:.3f}  PR-AUC {self.pr_auc:.3f}  "
            f"(threshold {self.threshold:.3g}; {self.n} examples, {self.n_positive} frauds)"
        )

    def to_dict(self) -> dict[str, float | int]:
        """Return the metrics as a JSON-ready dict."""
        return asdict(self)


def _validated(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Return labels and scores as float64 vectors after checking them."""
    labels = np.asarray(y_true, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or values.shape != labels.shape:
        raise InputError(
            f"`y_true` and `scores` must be 1-D of one length; got shapes {labels.shape} and "
            f"{values.shape}."
        )
    if not np.all((labels == 0) | (labels == 1)):
        raise InputError("`y_true` must hold only 0 and 1 (1 = fraud).")
    if not np.all(np.isfinite(values)):
        raise InputError("`scores` must be finite; the model produced NaN or infinity.")
    n_positive = int(labels.sum())
    if n_positive == 0 or n_positive == labels.size:
        raise InputError(
            f"ranking metrics need frauds and legitimate examples; got {n_positive} frauds among "
            f"{labels.size} examples. Use a larger or stratified split (split(..., stratify=True))."
        )
    return labels, values


def _curve(labels: FloatArray, scores: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return true and false positives at each distinct threshold, highest first (Note [Ties])."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tps = np.cumsum(hits)[last_of_group]
    fps = (last_of_group + 1) - tps
    return tps, fps, ranked[last_of_group]


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Return the area under the ROC curve.

    Parameters
    ----------
    y_true : array_like of shape (m,)
        0/1 labels, with both classes present.
    scores : array_like of shape (m,)
        Higher means more likely a fraud.

    Returns
    -------
    float
        The probability that a random fraud outscores a random legitimate
        example, ties counting one half (Note [Ties]).

    Raises
    ------
    InputError
        If the shapes disagree, a label is not 0/1, or a class is missing.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])  # the tie counts 1/2
    0.875
    """
    tps, fps, _ = _curve(*_validated(y_true, scores))
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Return the area under the precision-recall curve as average precision.

    Parameters
    ----------
    y_true : array_like of shape (m,)
        0/1 labels, with both classes present.
    scores : array_like of shape (m,)
        Higher means more likely a fraud.

    Returns
    -------
    float
        ``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds (Note [Ties]).

    Raises
    ------
    InputError
        If the shapes disagree, a label is not 0/1, or a class is missing.

    Examples
    --------
    >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    tps, fps, _ = _curve(*_validated(y_true, scores))
    precision = tps / (tps + fps)
    recall = np.r_[0.0, tps / tps[-1]]
    return float(np.sum(np.diff(recall) * precision))


def precision_recall_f1(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[float, float, float]:
    """Return precision, recall and F1 of 0/1 predictions.

    Parameters
    ----------
    y_true : array_like of shape (m,)
        0/1 labels.
    y_pred : array_like of shape (m,)
        0/1 predictions (1 = flagged as fraud).

    Returns
    -------
    precision, recall, f1 : float
        ``TP / (TP + FP)``, ``TP / (TP + FN)`` and ``2 TP / (2 TP + FP + FN)``;
        each is 0 where its denominator is 0.

    Raises
    ------
    InputError
        If the shapes disagree or a value is not 0/1.

    Examples
    --------
    >>> precision_recall_f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])  # TP 2, FP 1, FN 1
    (0.6666666666666666, 0.6666666666666666, 0.6666666666666666)
    """
    labels = np.asarray(y_true)
    flagged = np.asarray(y_pred)
    if labels.ndim != 1 or flagged.shape != labels.shape:
        raise InputError(
            f"`y_true` and `y_pred` must be 1-D of one length; got shapes {labels.shape} and "
            f"{flagged.shape}."
        )
    if not np.all(np.isin(labels, (0, 1))) or not np.all(np.isin(flagged, (0, 1))):
        raise InputError("`y_true` and `y_pred` must hold only 0 and 1.")
    tp = int(np.sum((labels == 1) & (flagged == 1)))
    fp = int(np.sum((labels == 0) & (flagged == 1)))
    fn = int(np.sum((labels == 1) & (flagged == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def best_f1_threshold(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Return the score threshold that maximises F1 (flag when ``score >= threshold``).

    Choose it on validation data, never on the test data it will be judged on.

    Parameters
    ----------
    y_true : array_like of shape (m,)
        0/1 labels, with both classes present.
    scores : array_like of shape (m,)
        Higher means more likely a fraud.

    Returns
    -------
    float
        One of the scores; of equally good thresholds, the highest (fewest flags).

    Raises
    ------
    InputError
        If the shapes disagree, a label is not 0/1, or a class is missing.

    Examples
    --------
    >>> best_f1_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.35
    """
    tps, fps, thresholds = _curve(*_validated(y_true, scores))
    f1 = 2 * tps / (tps + fps + tps[-1])
    return float(thresholds[int(np.argmax(f1))])


def evaluate(
    net: FraudNetwork,
    params: Mapping[str, FloatArray],
    standardizer: Standardizer,
    data: PaymentData,
    threshold: float,
) -> Metrics:
    """Score a trained network on labelled data.

    Parameters
    ----------
    net : FraudNetwork
        The architecture.
    params : dict of str to numpy.ndarray
        Its trained parameters.
    standardizer : Standardizer
        The transformation fitted on the training split.
    data : PaymentData
        Held-out examples, with frauds and legitimate ones.
    threshold : float
        Flag an example when its predicted probability is at least this
        (:attr:`TrainingResult.threshold`, chosen on validation data).

    Returns
    -------
    Metrics
        Precision, recall and F1 at `threshold`; ROC-AUC and PR-AUC over all thresholds.

    Raises
    ------
    InputError
        If `data` lacks frauds or legitimate examples, or does not match the network.
    """
    proba = net.predict_proba(params, standardizer.transform(data.X))
    flagged = (proba >= threshold).astype(np.int64)
    precision, recall, f1 = precision_recall_f1(data.y, flagged)
    return Metrics(
        precision=precision,
        recall=recall,
        f1=f1,
        roc_auc=roc_auc(data.y, proba),
        pr_auc=average_precision(data.y, proba),
        threshold=float(threshold),
        n=data.n,
        n_positive=data.n_positive,
    )
