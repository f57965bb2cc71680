"""Reference models with hand-written backpropagation: a fraud-detection network.

A configurable deep network (:class:`FraudNetwork`) whose gradients
:func:`gradproof.check` can prove correct, the data to train it on (synthetic
payments from :func:`make_payments`, or your own CSV with :func:`load_csv`),
and the training and evaluation around it. Examples are rows throughout: ``X``
is (m, n_features) and ``y`` is (m,) with 1 for fraud.

===================  ====================================================
module               concept
===================  ====================================================
``network``          :class:`FraudNetwork`: forward, cost, hand-written backward
``bugs``             :data:`BUGS` it can plant in its backward, for demos
``payments``         :func:`make_payments`: the synthetic data and its stated process
``data``             :class:`PaymentData` and the stratified :func:`split`
``csvfile``          :func:`load_csv` / :func:`write_csv`
``standardizer``     :class:`Standardizer`, fitted on the training split
``optimizers``       :class:`GradientDescent`, :class:`Adam`
``training``         :func:`train`, :func:`logistic_baseline`, their config and result
``metrics``          precision, recall, F1, ROC-AUC, PR-AUC and :func:`evaluate`
===================  ====================================================

Examples
--------
>>> from gradproof.models import FraudNetwork, make_payments, split, train, evaluate
>>> train_data, val_data, test_data = split(make_payments(4_000, seed=0))
>>> net = FraudNetwork(sizes=(train_data.n_features, 16, 1))
>>> result = train(net, train_data, val_data)
>>> metrics = evaluate(net, result.params, result.standardizer, test_data, result.threshold)
>>> metrics.n, metrics.n_positive
(600, 9)
"""

from __future__ import annotations

from gradproof.models.bugs import BUGS, bug_parameters
from gradproof.models.csvfile import load_csv, write_csv
from gradproof.models.data import PaymentData, split
from gradproof.models.metrics import (
    Metrics,
    average_precision,
    best_f1_threshold,
    evaluate,
    precision_recall_f1,
    roc_auc,
)
from gradproof.models.network import FraudNetwork
from gradproof.models.optimizers import Adam, GradientDescent, make_optimizer
from gradproof.models.payments import FEATURE_NAMES, make_payments
from gradproof.models.standardizer import Standardizer
from gradproof.models.training import (
    EpochRecord,
    TrainingCallback,
    TrainingConfig,
    TrainingResult,
    logistic_baseline,
    train,
)

__all__ = [
    "BUGS",
    "FEATURE_NAMES",
    "Adam",
    "EpochRecord",
    "FraudNetwork",
    "GradientDescent",
    "Metrics",
    "PaymentData",
    "Standardizer",
    "TrainingCallback",
    "TrainingConfig",
    "TrainingResult",
    "average_precision",
    "best_f1_threshold",
    "bug_parameters",
    "evaluate",
    "load_csv",
    "logistic_baseline",
    "make_optimizer",
    "make_payments",
    "precision_recall_f1",
    "roc_auc",
    "split",
    "train",
    "write_csv",
]
