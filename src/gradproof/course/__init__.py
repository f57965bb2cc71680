"""The deeplearning.ai gradient-checking assignment, reproduced.

This module follows the classic gradient-checking exercise of the course
"Improving Deep Neural Networks" (deeplearning.ai, week 1) with the function
names, arguments and return values its students know, and with the same
arithmetic, so that the published figures come out:

* a one-dimensional check of ``J(theta) = theta * x``
  (:func:`forward_propagation`, :func:`backward_propagation`,
  :func:`gradient_check`), whose difference for ``x = 2, theta = 4`` is
  ``2.919335883291695e-10``;
* an N-dimensional check of a 3-layer network LINEAR -> RELU -> LINEAR -> RELU
  -> LINEAR -> SIGMOID with layer sizes 4 -> 5 -> 3 -> 1
  (:func:`forward_propagation_n`, :func:`gradient_check_n`, and the helpers
  :func:`dictionary_to_vector`, :func:`vector_to_dictionary`,
  :func:`gradients_to_vector`).

:func:`backward_propagation_n` is the backward pass *as the assignment ships
it*, with two planted bugs for the gradient check to find (difference
``0.285093156...`` on :func:`gradient_check_n_test_case`);
:func:`backward_propagation_n_corrected` has them fixed (difference about
``1.19e-7``).

None of the functions modifies its arguments.

Examples
--------
>>> from gradproof.course import (
...     backward_propagation_n_corrected,
...     forward_propagation_n,
...     gradient_check_n,
...     gradient_check_n_test_case,
... )
>>> X, Y, parameters = gradient_check_n_test_case()
>>> cost, cache = forward_propagation_n(X, Y, parameters)
>>> gradients = backward_propagation_n_corrected(X, Y, cache)
>>> difference = gradient_check_n(parameters, gradients, X, Y)  # doctest: +ELLIPSIS
Your backward propagation works perfectly fine! difference = 1.18...e-07
"""

from __future__ import annotations

from gradproof.course._check_n import gradient_check_n, gradient_check_n_test_case
from gradproof.course._network import (
    backward_propagation_n,
    backward_propagation_n_corrected,
    forward_propagation_n,
    relu,
    sigmoid,
)
from gradproof.course._one_dimensional import (
    backward_propagation,
    forward_propagation,
    gradient_check,
)
from gradproof.course._parameters import PARAMETER_KEYS
from gradproof.course._stages import forward_stages_n
from gradproof.course._vectors import (
    dictionary_to_vector,
    gradients_to_vector,
    parameter_gradients,
    vector_to_dictionary,
)

__all__ = [
    "PARAMETER_KEYS",
    "backward_propagation",
    "backward_propagation_n",
    "backward_propagation_n_corrected",
    "dictionary_to_vector",
    "forward_propagation",
    "forward_propagation_n",
    "forward_stages_n",
    "gradient_check",
    "gradient_check_n",
    "gradient_check_n_test_case",
    "gradients_to_vector",
    "parameter_gradients",
    "relu",
    "sigmoid",
    "vector_to_dictionary",
]
