"""The assignment's one-dimensional gradient check, of ``J(theta) = theta * x``."""

from __future__ import annotations

import numpy as np

from gradproof.course._rebinding import _public

__all__ = ["backward_propagation", "forward_propagation", "gradient_check"]


def forward_propagation(x: float, theta: float) -> float:
    """Compute the linear cost ``J = theta * x``.

    Parameters
    ----------
    x : float
        The input.
    theta : float
        The parameter.

    Returns
    -------
    float
        The cost ``J(theta) = theta * x``.

    Examples
    --------
    >>> forward_propagation(2.0, 4.0)
    8.0
    """
    J = theta * x
    return J


def backward_propagation(x: float, theta: float) -> float:
    """Compute the derivative of ``J = theta * x`` with respect to ``theta``.

    Parameters
    ----------
    x : float
        The input.
    theta : float
        The parameter (unused: the derivative of a linear function does not depend on it).

    Returns
    -------
    float
        ``dtheta = dJ/dtheta = x``.

    Examples
    --------
    >>> backward_propagation(2.0, 4.0)
    2.0
    """
    dtheta = x
    return dtheta


def gradient_check(x: float, theta: float, epsilon: float = 1e-7, print_msg: bool = True) -> float:
    """Check :func:`backward_propagation` against a centered difference.

    The gradient approximation is ``(J(theta + epsilon) - J(theta - epsilon)) /
    (2 * epsilon)`` and the returned difference is the relative distance
    ``|grad - gradapprox| / (|grad| + |gradapprox|)``.

    Parameters
    ----------
    x : float
        The input.
    theta : float
        The parameter at which the gradient is checked.
    epsilon : float, default 1e-7
        The step of the centered difference.
    print_msg : bool, default True
        Print ``"The gradient is correct!"`` when the difference is below ``1e-7``,
        ``"The gradient is wrong!"`` otherwise.

    Returns
    -------
    float
        The relative difference between the analytic and approximated gradients.

    Examples
    --------
    >>> difference = gradient_check(2.0, 4.0)
    The gradient is correct!
    >>> print(f"{difference:.10e}")
    2.9193358833e-10
    """
    thetaplus = theta + epsilon
    thetaminus = theta - epsilon
    # The functions gradproof.course holds now (Note [Rebinding the course's functions]).
    J_plus = _public(forward_propagation)(x, thetaplus)
    J_minus = _public(forward_propagation)(x, thetaminus)
    gradapprox = (J_plus - J_minus) / (2 * epsilon)

    grad = _public(backward_propagation)(x, theta)

    numerator = np.linalg.norm(grad - gradapprox)
    denominator = np.linalg.norm(grad) + np.linalg.norm(gradapprox)
    difference = float(numerator / denominator)

    if print_msg:
        if difference < 1e-7:
            print("The gradient is correct!")
        else:
            print("The gradient is wrong!")
    return difference
