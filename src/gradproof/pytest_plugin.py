"""pytest plugin: the ``assert_gradients`` fixture, the ``gradproof`` marker and two options.

Installed with gradproof and registered through the ``pytest11`` entry point,
so there is nothing to configure. (Without the entry point, enable it with
``-p gradproof.pytest_plugin`` or ``pytest_plugins = ["gradproof.pytest_plugin"]``
in the root ``conftest.py``.) The plugin only wires pytest to
:mod:`gradproof.testing`, where the logic lives.

Fixture
    ``assert_gradients``: a :class:`~gradproof.testing.GradientAssertions`.
    Call it like :func:`gradproof.testing.assert_gradients`, ``assert_gradients(loss,
    grad, params, **options)``; it raises
    :class:`~gradproof.errors.GradientMismatchError` with the full report when a
    gradient is wrong. ``assert_gradients.function(fn, *inputs)``,
    ``.module(module, inputs, loss_fn)`` and ``.jax_function(fn, *args)`` check
    PyTorch and JAX code the same way.

Marker
    ``@pytest.mark.gradproof(**options)`` sets the options of the fixture's
    checks in that test: any keyword of :func:`gradproof.check` (``rtol``,
    ``atol``, ``seed``, ``mode``, ``method``, ``max_evals``, ...) and
    ``allow_inconclusive``. Marks on the module (``pytestmark``), the class and
    the function combine; the closest one wins for each option, and keywords
    passed to the fixture's call win over all marks.

Command-line options
    ``--gradproof-seed=N`` and ``--gradproof-mode={auto,full,directional,sampled}``
    set ``seed`` and ``mode`` for every check made through the fixture, over
    marks and call keywords: ``--gradproof-mode=full`` makes a CI run sweep
    every entry of every tensor, and ``--gradproof-seed`` re-seeds random
    losses (dropout) with another seed. Direct calls of
    :mod:`gradproof.testing` are not affected.

Examples
--------
A test module::

    import pytest

    @pytest.mark.gradproof(seed=0, rtol=1e-6)
    def test_backward(assert_gradients):
        assert_gradients(model.loss, model.grad, model.params)

run with ``pytest --gradproof-mode=full``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from gradproof.checking.options import MODES
from gradproof.errors import GradientMismatchError, InputError
from gradproof.testing import GradientAssertions

__all__ = ["assert_gradients", "pytest_addoption", "pytest_configure"]

MARKER = "gradproof"
"""The marker's name: ``@pytest.mark.gradproof(**options)``."""

_MARKER_HELP = (
    f"{MARKER}(**options): default options of the assert_gradients fixture's checks in this "
    "test, e.g. rtol=1e-6, seed=0, mode='full', allow_inconclusive=False (any keyword of "
    "gradproof.check); module, class and function marks combine, the closest wins."
)

_FORCED = (("gradproof_seed", "seed"), ("gradproof_mode", "mode"))
"""The command line's options: (pytest's name for the option, the check's keyword)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--gradproof-seed`` and ``--gradproof-mode``."""
    group = parser.getgroup("gradproof", "gradient checks (gradproof)")
    group.addoption(
        "--gradproof-seed",
        type=int,
        default=None,
        metavar="N",
        help="seed every gradient check of the assert_gradients fixture with N (re-seeds "
        "random losses such as dropout), over marks and call keywords.",
    )
    group.addoption(
        "--gradproof-mode",
        default=None,
        choices=MODES,
        help="run every gradient check of the assert_gradients fixture in this mode, over "
        "marks and call keywords; 'full' measures every entry (for CI).",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``gradproof`` marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Give a wrong gradient's verdict first in the short summary (``-ra``).

    pytest's summary line is ``FAILED <test> - <crash message>``, cut to the
    terminal's width; the crash message would start with the exception's
    dotted name, ``gradproof.errors.GradientMismatchError: `` (41 characters),
    leaving little room at 80 columns. For a GradientMismatchError it is the
    error's first line alone, e.g. ``wrong gradient: W2 (2× too large)``,
    which says what failed. The traceback still shows the full message.
    """
    report = yield
    crash = getattr(report.longrepr, "reprcrash", None)
    if call.excinfo is not None and crash is not None:
        error = call.excinfo.value
        if isinstance(error, GradientMismatchError):
            crash.message = str(error).partition("\n")[0]
    return report


@pytest.fixture
def assert_gradients(request: pytest.FixtureRequest) -> GradientAssertions:
    """Return ``assert_gradients(loss, grad, params, **options)`` with the test's options.

    The options come from the ``gradproof`` marks on the test, its class and
    its module (the closest wins), under the call's own keywords and the
    command line's ``--gradproof-seed`` / ``--gradproof-mode``.
    """
    forced = {
        keyword: value
        for option, keyword in _FORCED
        if (value := request.config.getoption(option)) is not None
    }
    return GradientAssertions(_marked_options(request.node), forced)


def _marked_options(node: pytest.Item) -> dict[str, Any]:
    """Merge the node's ``gradproof`` marks, the closest (the function's) winning."""
    options: dict[str, Any] = {}
    # iter_markers yields the closest mark first: apply them farthest first.
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            raise InputError(
                f"`@pytest.mark.{MARKER}` takes keyword options only, e.g. "
                f"`@pytest.mark.{MARKER}(mode='full', seed=0)`; got the positional "
                f"argument{'s' if len(mark.args) > 1 else ''} {mark.args!r} on {node.nodeid}."
            )
        options.update(mark.kwargs)
    return options
