"""Synthetic card payments with a known, stated fraud mechanism.

:func:`make_payments` draws ``n`` transactions independently. Each gets the
features below from the stated distributions and is then labelled fraud with
a probability given by a logistic model with nonlinear effects, so that the
truth is known and a network has something to find that a linear model cannot.

Features (:data:`FEATURE_NAMES`)
    ``log_amount``
        Natural log of the amount in dollars: ``N(mu_c, 0.9)`` for the
        merchant category ``c``, with ``mu`` = 3.3 grocery, 3.1 dining, 3.8
        retail, 5.3 travel, 5.0 electronics, 2.4 digital goods; amounts below
        $0.50 are raised to $0.50.
    ``hour``
        Local time of day in hours, in [0, 24): ``N(14, 4)`` wrapped around
        the clock with probability 0.75, uniform otherwise.
    ``account_age_days``
        Age of the card's account: uniform on [0, 60) for 20 % of the
        transactions (new accounts), ``60 + Exponential(mean 900)`` otherwise.
    ``log_distance_km``
        ``log(1 + d)`` of the distance ``d`` from the cardholder's home,
        ``d ~ LogNormal(log 8, 1.3)`` km.
    ``tx_count_1h``, ``tx_count_24h``
        Velocity: earlier transactions of the same card in the last hour,
        ``Poisson(0.3)`` plus, in a burst (probability 0.06), ``Poisson(6)``
        more; in the last day, the hour's count plus ``Poisson(3)``.
    ``foreign``
        1 if the merchant is abroad (probability 0.06), else 0.
    ``card_present``
        1 for a chip or contactless payment (probability 0.7; never for
        digital goods), else 0.
    ``category_<c>`` for ``c`` in grocery, dining, retail, travel, electronics, digital
        One-hot merchant category (:data:`CATEGORIES`), drawn with
        probabilities 0.30, 0.22, 0.20, 0.07, 0.09 and 0.12.

Fraud mechanism
    ``P(fraud | x) = sigmoid(beta0 + s(x))`` with

    .. code-block:: text

        s(x) =  0.5 (log_amount - 3.5) + 1.2 foreign - 1.0 card_present
              + 0.4 log_distance_km - 0.5 log(1 + account_age_days / 30)
              + category effect (grocery -0.6, dining -0.4, retail 0,
                                 travel 0.2, electronics 0.6, digital 0.5)
              + 2.0 night(hour)                          night-time risk
              + 7.0 [hour < 6] [account_age_days < 60] [amount > $50]
                                                         account takeover
              + 8.0 [tx_count_1h >= 4] [amount < $10]    card testing

    where ``night(h) = exp(-d(h, 3)^2 / 8)`` is a bump centred on 3 a.m.
    (``d`` is the distance on the 24-hour clock). The two fraud rings have
    opposite signs in amount (takeovers are large, card tests small), are 3-
    and 2-way interactions with thresholds, and the night bump is not
    monotone in ``hour``: none of the three is a weighted sum of the
    features. ``beta0`` is solved for (by bisection) so that the mean fraud
    probability over the drawn transactions equals `fraud_rate`, and the
    labels are Bernoulli draws. At the defaults about 0.6 % of transactions
    fall in a takeover pattern (nearly all of them frauds) and 0.8 % in a
    card-testing one (about two thirds frauds): together, about 70 % of the
    frauds. The true logit ``s(x)`` ranks the held-out transactions with a
    PR-AUC of about 0.75-0.85, an upper bound for any model.
"""

from __future__ import annotations

import numpy as np

from gradproof._typing import FloatArray
from gradproof.errors import InputError
from gradproof.models.data import PaymentData

__all__ = ["CATEGORIES", "FEATURE_NAMES", "make_payments"]

CATEGORIES: tuple[str, ...] = ("grocery", "dining", "retail", "travel", "electronics", "digital")
"""Merchant categories, in the order of their one-hot columns."""

FEATURE_NAMES: tuple[str, ...] = (
    "log_amount",
    "hour",
    "account_age_days",
    "log_distance_km",
    "tx_count_1h",
    "tx_count_24h",
    "foreign",
    "card_present",
    *(f"category_{name}" for name in CATEGORIES),
)
"""The columns of :func:`make_payments`'s ``X``, in order (see the module docstring)."""

_CATEGORY_P = np.array([0.30, 0.22, 0.20, 0.07, 0.09, 0.12])
_LOG_AMOUNT_MEAN = np.array([3.3, 3.1, 3.8, 5.3, 5.0, 2.4])
_CATEGORY_RISK = np.array([-0.6, -0.4, 0.0, 0.2, 0.6, 0.5])


def make_payments(n: int = 20_000, *, fraud_rate: float = 0.015, seed: int = 0) -> PaymentData:
    """Draw synthetic labelled card transactions (process in the module docstring).

    Parameters
    ----------
    n : int, default 20_000
        Number of transactions.
    fraud_rate : float, default 0.015
        The expected share of frauds, in (0, 0.5); the drawn share varies
        around it (its standard deviation is ``sqrt(r (1 - r) / n)``).
    seed : int, default 0
        Seed of the generator: the same seed gives the same data.

    Returns
    -------
    PaymentData
        ``X`` of shape (n, 14) with the columns :data:`FEATURE_NAMES`, and ``y``.

    Raises
    ------
    InputError
        If `n` is not a positive integer or `fraud_rate` is outside (0, 0.5).

    Examples
    --------
    >>> data = make_payments(20_000, seed=0)
    >>> data.X.shape, 0.01 <= data.fraud_rate <= 0.02
    ((20000, 14), True)
    >>> data.feature_names[:3]
    ('log_amount', 'hour', 'account_age_days')
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"`n` must be a positive integer; got {n!r}.")
    if not 0 < fraud_rate < 0.5:
        raise InputError(f"`fraud_rate` must be in (0, 0.5); got {fraud_rate!r}, e.g. use 0.015.")
    rng = np.random.default_rng(seed)
    X = _draw_features(rng, int(n))
    score = _fraud_score(X)
    probability = _sigmoid(_intercept(score, fraud_rate) + score)
    y = (rng.random(int(n)) < probability).astype(np.int64)
    return PaymentData(X=X, y=y, feature_names=FEATURE_NAMES)


def _draw_features(rng: np.random.Generator, n: int) -> FloatArray:
    """Draw the (n, 14) feature matrix, columns in :data:`FEATURE_NAMES` order."""
    category = rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_P)
    log_amount = np.log(np.maximum(np.exp(rng.normal(_LOG_AMOUNT_MEAN[category], 0.9)), 0.5))
    daytime = rng.random(n) < 0.75
    hour = np.where(daytime, rng.normal(14.0, 4.0, n), rng.uniform(0.0, 24.0, n)) % 24.0
    new_account = rng.random(n) < 0.2
    account_age = np.where(new_account, rng.uniform(0.0, 60.0, n), 60.0 + rng.exponential(900.0, n))
    log_distance = np.log1p(rng.lognormal(np.log(8.0), 1.3, n))
    burst = rng.random(n) < 0.06
    tx_1h = rng.poisson(0.3, n) + burst * rng.poisson(6.0, n)
    tx_24h = tx_1h + rng.poisson(3.0, n)
    foreign = rng.random(n) < 0.06
    card_present = (rng.random(n) < 0.7) & (category != CATEGORIES.index("digital"))
    one_hot = np.eye(len(CATEGORIES))[category]
    columns = [log_amount, hour, account_age, log_distance, tx_1h, tx_24h, foreign, card_present]
    X: FloatArray = np.column_stack([*columns, one_hot]).astype(np.float64)
    return X


def _fraud_score(X: FloatArray) -> FloatArray:
    """Return ``s(x)`` of the module docstring, the fraud logit without its intercept."""
    log_amount, hour, account_age, log_distance, tx_1h, _, foreign, card_present = X[:, :8].T
    amount = np.exp(log_amount)
    clock = np.minimum(np.abs(hour - 3.0), 24.0 - np.abs(hour - 3.0))
    score: FloatArray = (
        0.5 * (log_amount - 3.5)
        + 1.2 * foreign
        - 1.0 * card_present
        + 0.4 * log_distance
        - 0.5 * np.log1p(account_age / 30.0)
        + X[:, 8:] @ _CATEGORY_RISK
        + 2.0 * np.exp(-(clock**2) / 8.0)
        + 7.0 * ((hour < 6) & (account_age < 60) & (amount > 50))
        + 8.0 * ((tx_1h >= 4) & (amount < 10))
    )
    return score


def _sigmoid(z: FloatArray) -> FloatArray:
    """Return ``1 / (1 + exp(-z))`` without overflow."""
    out: FloatArray = np.exp(-np.logaddexp(0.0, -z))
    return out


def _intercept(score: FloatArray, fraud_rate: float) -> float:
    """Return ``beta0`` with ``mean(sigmoid(beta0 + score)) == fraud_rate``, by bisection.

    The mean is increasing in ``beta0``, from 0 to 1, so the root is unique.
    """
    low, high = -50.0 - float(score.max()), 50.0 - float(score.min())
    for _ in range(100):
        middle = 0.5 * (low + high)
        if np.mean(_sigmoid(middle + score)) < fraud_rate:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)
