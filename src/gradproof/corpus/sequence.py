"""Sequence models: a tanh RNN unrolled in time, single-head attention, an embedding.

These are the models whose backward passes accumulate: over time steps
(back-propagation through time), over the positions that share a weight,
over repeated token indices. Forgetting to accumulate, or accumulating along
the wrong axis, is the typical mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gradproof.corpus._ops import log_softmax, one_hot, softmax
from gradproof.corpus._types import Bug, BugSpec, Case, Grads, assemble, check_bug_name, frozen_data

__all__ = ["attention", "build", "embedding", "rnn"]

Cache = dict[str, Any]

# -- tanh RNN ----------------------------------------------------------------------------------

_RNN_BUGS = (
    BugSpec(
        "dWx-row-overwritten",
        "few_entries",
        ("Wx",),
        "dWx[token] = dz instead of +=: the input-weight row of a token seen at several time "
        "steps keeps only one step's contribution (only token 4's row is wrong).",
    ),
    BugSpec(
        "dWh-overwritten",
        "zero",
        ("Wh",),
        "dWh = outer(h_prev, dz) instead of +=: the reversed loop ends at t = 0, whose h_prev "
        "is the zero initial state, so dWh comes out all zeros.",
    ),
    BugSpec(
        "recurrent-path-missing",
        "unknown",
        ("Wx", "Wh", "b"),
        "dh_next is never set from dz @ Wh^T: the gradient does not flow back through the "
        "recurrence (back-propagation truncated to one step).",
    ),
    BugSpec(
        "dWh-transposed",
        "transpose",
        ("Wh",),
        "dWh += outer(dz, h_prev) instead of outer(h_prev, dz) (h_t = tanh(... + h_prev @ Wh)).",
    ),
)


def _rnn_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    tokens, targets = data["tokens"], data["targets"]
    h = np.zeros(p["Wh"].shape[0])  # h0 = 0
    hs = [h]
    for token in tokens:
        h = np.tanh(p["Wx"][token] + h @ p["Wh"] + p["b"])
        hs.append(h)
    H = np.stack(hs)  # (T + 1, hidden): H[0] = h0, H[t + 1] = h_t
    out = H[1:] @ p["V"]  # a read-out at every step
    loss = 0.5 * np.mean(np.sum((out - targets) ** 2, axis=1))
    return float(loss), {"H": H, "out": out}


def _rnn_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _RNN_BUGS)
    tokens, targets = data["tokens"], data["targets"]
    H, out = cache["H"], cache["out"]
    dout = (out - targets) / len(tokens)
    dV = H[1:].T @ dout
    dWx, dWh, db = np.zeros_like(p["Wx"]), np.zeros_like(p["Wh"]), np.zeros_like(p["b"])
    dh_next = np.zeros(H.shape[1])  # d loss / d h_t through h_{t+1}
    for t in reversed(range(len(tokens))):
        h, h_prev = H[t + 1], H[t]
        dh = dout[t] @ p["V"].T + dh_next
        dz = dh * (1 - h**2)
        if bug == "dWx-row-overwritten":
            dWx[tokens[t]] = dz  # BUG: = instead of +=
        else:
            dWx[tokens[t]] += dz
        if bug == "dWh-overwritten":
            dWh = np.outer(h_prev, dz)  # BUG: = instead of +=
        elif bug == "dWh-transposed":
            dWh += np.outer(dz, h_prev)  # BUG
        else:
            dWh += np.outer(h_prev, dz)
        db += dz
        dh_next = dz @ p["Wh"].T
        if bug == "recurrent-path-missing":
            dh_next = np.zeros_like(dh_next)  # BUG
    return {"Wx": dWx, "Wh": dWh, "b": db, "V": dV}


def rnn() -> tuple[Case, tuple[Bug, ...]]:
    """Build the tanh RNN case.

    Returns
    -------
    case : Case
        ``"tanh-rnn"``: a character-level RNN over 6 steps (vocabulary 6,
        token 4 twice), ``h_t = tanh(Wx[x_t] + h_{t-1} Wh + b)`` from ``h_0 =
        0``, a read-out ``V`` (4, 2) at every step, mean squared error.
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(606)
    tokens = np.array([1, 4, 0, 4, 2, 5])
    targets = 0.5 * rng.normal(size=(6, 2))
    params = {
        "Wx": 0.6 * rng.normal(size=(6, 4)),
        "Wh": 0.5 * rng.normal(size=(4, 4)),
        "b": 0.1 * rng.normal(size=4),
        "V": 0.6 * rng.normal(size=(4, 2)),
    }
    return assemble(
        name="tanh-rnn",
        description="A tanh RNN over 6 one-hot tokens (hidden 4) with a read-out at every "
        "step, back-propagation through time.",
        params=params,
        data=frozen_data(tokens=tokens, targets=targets),
        forward=_rnn_forward,
        backward=_rnn_backward,
        bugs=_RNN_BUGS,
    )


# -- single-head attention ---------------------------------------------------------------------

_ATTENTION_BUGS = (
    BugSpec(
        "dWq-dWk-swapped",
        "swapped",
        ("Wq", "Wk"),
        "The query and key weight gradients are returned under each other's names.",
    ),
    BugSpec(
        "softmax-backward-diagonal",
        "unknown",
        ("Wq", "Wk", "P"),
        "dS = A (1 - A) dA: only the diagonal of the softmax's Jacobian is used, dropping the "
        "- A_i A_j cross terms.",
    ),
    BugSpec(
        "dWv-left-at-zero",
        "zero",
        ("Wv",),
        "dWv stays at its np.zeros_like initialisation: the value projection's gradient is "
        "never computed (dV itself still flows back to the input).",
    ),
    BugSpec(
        "dP-reduced-over-positions",
        "axis",
        ("P",),
        "dP = dXp.sum(axis=(0, 1)) broadcast to every position: the positional embedding is "
        "reduced over the time axis as well as the batch, as if one vector were shared.",
    ),
)


def _attention_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, targets = data["X"], data["targets"]
    Xp = X + p["P"]  # (batch, T, d): inputs plus a learned positional embedding
    Q, K, V = Xp @ p["Wq"], Xp @ p["Wk"], Xp @ p["Wv"]
    scale = 1 / np.sqrt(Q.shape[-1])
    A = softmax(Q @ K.transpose(0, 2, 1) * scale, axis=-1)  # (batch, T, T)
    out = A @ V
    loss = 0.5 * np.mean((out - targets) ** 2)
    return float(loss), {"Xp": Xp, "Q": Q, "K": K, "V": V, "A": A, "out": out, "scale": scale}


def _attention_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _ATTENTION_BUGS)
    Xp, Q, K, V, A, out = (cache[key] for key in ("Xp", "Q", "K", "V", "A", "out"))
    scale = cache["scale"]
    dout = (out - data["targets"]) / out.size
    dA = dout @ V.transpose(0, 2, 1)
    dV = A.transpose(0, 2, 1) @ dout
    # Softmax along the last axis: dS_ij = A_ij (dA_ij - sum_k dA_ik A_ik).
    dS = A * (dA - np.sum(dA * A, axis=-1, keepdims=True))
    if bug == "softmax-backward-diagonal":
        dS = A * (1 - A) * dA  # BUG
    dQ = dS @ K * scale
    dK = dS.transpose(0, 2, 1) @ Q * scale
    dWq = np.einsum("btd,bte->de", Xp, dQ)  # sum over the batch of Xp^T dQ
    dWk = np.einsum("btd,bte->de", Xp, dK)
    dWv = np.einsum("btd,bte->de", Xp, dV)
    if bug == "dWv-left-at-zero":
        dWv = np.zeros_like(p["Wv"])  # BUG
    dXp = dQ @ p["Wq"].T + dK @ p["Wk"].T + dV @ p["Wv"].T
    dP = dXp.sum(axis=0)  # P is shared by the batch
    if bug == "dP-reduced-over-positions":
        dP = np.broadcast_to(dXp.sum(axis=(0, 1)), p["P"].shape).copy()  # BUG
    if bug == "dWq-dWk-swapped":
        dWq, dWk = dWk, dWq  # BUG
    return {"Wq": dWq, "Wk": dWk, "Wv": dWv, "P": dP}


def attention() -> tuple[Case, tuple[Bug, ...]]:
    """Build the single-head attention case.

    Returns
    -------
    case : Case
        ``"attention"``: ``softmax(Q K^T / sqrt(d)) V`` with ``Q, K, V = (X +
        P) Wq, Wk, Wv`` (3, 3) and a positional embedding ``P`` (4, 3), over a
        batch of 2 sequences of 4 tokens; mean squared error.
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(707)
    X = rng.normal(size=(2, 4, 3))
    targets = 0.5 * rng.normal(size=(2, 4, 3))
    params = {
        "Wq": 0.8 * rng.normal(size=(3, 3)),
        "Wk": 0.8 * rng.normal(size=(3, 3)),
        "Wv": 0.8 * rng.normal(size=(3, 3)),
        "P": 0.3 * rng.normal(size=(4, 3)),
    }
    return assemble(
        name="attention",
        description="Single-head scaled dot-product self-attention with query, key and value "
        "projections and a learned positional embedding; mean squared error.",
        params=params,
        data=frozen_data(X=X, targets=targets),
        forward=_attention_forward,
        backward=_attention_backward,
        bugs=_ATTENTION_BUGS,
    )


# -- embedding with repeated indices -----------------------------------------------------------

_EMBEDDING_BUGS = (
    BugSpec(
        "dE-assigned-not-accumulated",
        "few_entries",
        ("E",),
        "dE[tokens] = dX instead of np.add.at(dE, tokens, dX): with repeated tokens, fancy-index "
        "assignment keeps only the last occurrence, so only the rows of tokens 1 and 5 (seen "
        "twice) are wrong.",
    ),
    BugSpec(
        "logits-grad-sign",
        "sign",
        ("E", "W", "b"),
        "dZ = (onehot - P) / m instead of (P - onehot) / m.",
    ),
    BugSpec(
        "W-not-transposed",
        "unknown",
        ("E",),
        "dX = dZ @ W instead of dZ @ W^T (W is square, so the shapes match).",
    ),
)


def _embedding_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    tokens, Y1 = data["tokens"], data["Y1"]
    X = p["E"][tokens]  # (m, d): one row of E per token, rows repeat
    Z = X @ p["W"] + p["b"]
    logP = log_softmax(Z)
    loss = -np.sum(Y1 * logP) / len(tokens)
    return float(loss), {"X": X, "P": np.exp(logP)}


def _embedding_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _EMBEDDING_BUGS)
    tokens, Y1 = data["tokens"], data["Y1"]
    X, P = cache["X"], cache["P"]
    dZ = (P - Y1) / len(tokens)
    if bug == "logits-grad-sign":
        dZ = (Y1 - P) / len(tokens)  # BUG
    dW = X.T @ dZ
    db = dZ.sum(axis=0)
    dX = dZ @ p["W"].T
    if bug == "W-not-transposed":
        dX = dZ @ p["W"]  # BUG
    dE = np.zeros_like(p["E"])
    if bug == "dE-assigned-not-accumulated":
        dE[tokens] = dX  # BUG: the last occurrence of a repeated token wins
    else:
        np.add.at(dE, tokens, dX)  # every occurrence adds to its row
    return {"E": dE, "W": dW, "b": db}


def embedding() -> tuple[Case, tuple[Bug, ...]]:
    """Build the embedding case.

    Returns
    -------
    case : Case
        ``"embedding"``: an embedding table ``E`` (8 tokens, 4 dimensions)
        looked up by 10 tokens, two of which repeat, then a linear softmax
        classifier ``W`` (4, 4), ``b`` (4,); mean cross-entropy.
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(808)
    tokens = np.array([3, 1, 4, 1, 5, 0, 2, 6, 5, 7])
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 3, 0])
    params = {
        "E": rng.normal(size=(8, 4)),
        "W": 0.6 * rng.normal(size=(4, 4)),
        "b": 0.1 * rng.normal(size=4),
    }
    return assemble(
        name="embedding",
        description="An embedding lookup with repeated token indices, then a linear softmax "
        "classifier; mean cross-entropy.",
        params=params,
        data=frozen_data(tokens=tokens, labels=labels, Y1=one_hot(labels, 4)),
        forward=_embedding_forward,
        backward=_embedding_backward,
        bugs=_EMBEDDING_BUGS,
    )


def build() -> tuple[tuple[Case, tuple[Bug, ...]], ...]:
    """Build the sequence-model cases and their bugs.

    Returns
    -------
    tuple of (Case, tuple of Bug)
        The tanh RNN, single-head attention and the embedding.
    """
    return rnn(), attention(), embedding()
