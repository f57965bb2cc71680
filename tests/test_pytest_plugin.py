"""The pytest plugin, run inside pytester: the fixture, the marker and the command-line options."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest_plugins = ["pytester"]

PLUGIN = ("-p", "gradproof.pytest_plugin")


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch):
    # Once the pytest11 entry point is installed, autoloading it as well as `-p` would register
    # the plugin twice; the inner runs load exactly what they name.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The outer session has imported the plugin already, too late for assertion rewriting,
    # which it does not need.
    quiet = ("-W", "ignore::pytest.PytestAssertRewriteWarning")
    return pytester.runpytest(*PLUGIN, "--strict-markers", *quiet, *args)


SHIPPED = """
from gradproof import corpus

def test_shipped_backward(assert_gradients):
    case, bug = corpus.bugs()[0]  # the assignment's shipped backward: W2 and b1 are wrong
    assert_gradients(case.loss, bug.grad, case.params)
"""


# -- the fixture --------------------------------------------------------------------------------
def test_a_failing_check_shows_the_report_at_the_users_line(pytester):
    pytester.makepyfile(SHIPPED)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert ">       assert_gradients(case.loss, bug.grad, case.params)" in out
    assert (
        "E       gradproof.errors.GradientMismatchError: wrong gradients: b1 (4× too large), "
        "W2 (2× too large)\n" in out
    )
    for expected in (
        "b1: analytic = 4 × numeric on every entry",
        "W2: analytic = 2 × numeric on every entry",
        "W2[",  # the wrong entries, by name
        "b1[",
    ):
        assert expected in out, expected
    assert not [line for line in result.stdout.lines if "gradproof/testing.py" in line]
    assert not [line for line in result.stdout.lines if "gradproof/checking/check.py" in line]


def test_the_short_summary_at_80_columns_keeps_the_verdict(pytester, monkeypatch):
    """``pytest -ra`` cuts the summary line at the terminal's width: the verdict fits in it."""
    # On CI (the CI or BUILD_NUMBER variable set) pytest prints the whole message
    # unless --force-short-summary asks for the cut a terminal user sees.
    monkeypatch.setenv("COLUMNS", "80")
    pytester.makepyfile(test_grads=SHIPPED)  # FAILED test_grads.py::test_shipped_backward - ...
    result = run(pytester, "-ra", "--force-short-summary")
    result.assert_outcomes(failed=1)
    (summary,) = [line for line in result.stdout.lines if line.startswith("FAILED ")]
    assert len(summary) <= 80
    assert summary.startswith(
        "FAILED test_grads.py::test_shipped_backward - wrong gradients: b1 (4"
    )
    assert "GradientMismatchError: wrong gradients" in result.stdout.str()  # the traceback's


def test_without_tracebackhide_gradproofs_frames_would_show(pytester):
    # The control for the test above: a native traceback ignores __tracebackhide__.
    pytester.makepyfile(SHIPPED)
    result = run(pytester, "--tb=native")
    result.assert_outcomes(failed=1)
    assert [line for line in result.stdout.lines if "gradproof/testing.py" in line]


def test_a_passing_check_passes_the_test(pytester):
    pytester.makepyfile(
        """
        from gradproof import corpus

        def test_corrected_backward(assert_gradients):
            case = corpus.get_case("course-network")
            result = assert_gradients(case.loss, case.grad, case.params)
            assert result.passed and result.mode == "full" and result.seed is None
        """
    )
    run(pytester).assert_outcomes(passed=1)


# -- the marker ---------------------------------------------------------------------------------
def test_the_marker_sets_the_checks_options(pytester):
    pytester.makepyfile(
        """
        import pytest
        from gradproof import corpus

        @pytest.mark.gradproof(mode="directional")
        def test_directional(assert_gradients):
            case = corpus.get_case("course-network")
            result = assert_gradients(case.loss, case.grad, case.params)
            assert result.mode == "directional"
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_module_class_and_function_marks_combine_the_closest_winning(pytester):
    pytester.makepyfile(
        """
        import pytest
        from gradproof import corpus

        pytestmark = pytest.mark.gradproof(mode="directional", rtol=1e-4, seed=1)

        def check(assert_gradients, **overrides):
            case = corpus.get_case("course-network")
            result = assert_gradients(case.loss, case.grad, case.params, **overrides)
            return result.mode, result.rtol, result.seed

        def test_module_mark(assert_gradients):
            assert check(assert_gradients) == ("directional", 1e-4, 1)

        @pytest.mark.gradproof(rtol=1e-3)
        class TestMarks:
            def test_class_mark_wins_over_the_module(self, assert_gradients):
                assert check(assert_gradients) == ("directional", 1e-3, 1)

            @pytest.mark.gradproof(rtol=1e-2, mode="full")
            def test_function_mark_wins_over_the_class(self, assert_gradients):
                assert check(assert_gradients) == ("full", 1e-2, 1)

            def test_call_keywords_win_over_every_mark(self, assert_gradients):
                assert check(assert_gradients, rtol=1e-5, seed=2) == ("directional", 1e-5, 2)
        """
    )
    run(pytester).assert_outcomes(passed=4)


DROPOUT = """
import pytest
from gradproof import InputError, corpus

def check(assert_gradients):
    case = corpus.get_case("dropout-mlp")  # a fresh dropout mask from np.random at every call
    return assert_gradients(case.loss, case.grad, case.params)

def test_unseeded_dropout_is_refused(assert_gradients):
    with pytest.raises(InputError, match="Pass `seed=`"):
        check(assert_gradients)

@pytest.mark.gradproof(seed=0)
def test_seeded_dropout_is_checkable(assert_gradients):
    result = check(assert_gradients)
    assert result.passed and result.seed == 0
"""


def test_a_seed_in_the_marker_makes_a_dropout_loss_checkable(pytester):
    pytester.makepyfile(DROPOUT)
    run(pytester).assert_outcomes(passed=2)


def test_the_marker_can_refuse_inconclusive_checks(pytester):
    pytester.makepyfile(
        """
        import pytest
        from gradproof import corpus

        @pytest.mark.gradproof(allow_inconclusive=False)
        def test_lasso_at_its_kinks(assert_gradients):
            case = corpus.get_case("abs-at-zero")
            assert_gradients(case.loss, case.grad, case.params)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert "inconclusive gradient check" in result.stdout.str()
    assert "inconclusive gradient check: w (kink)\n" in result.stdout.str()
    assert "(`w`: 3 of 6 entries)" in result.stdout.str()


def test_positional_marker_arguments_are_refused_with_the_fix(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradproof("full")
        def test_positional(assert_gradients):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "`@pytest.mark.gradproof` takes keyword options only" in out
    assert "got the positional argument ('full',)" in out


def test_markers_help_lists_the_marker(pytester):
    result = run(pytester, "--markers")
    assert result.ret == 0
    assert "@pytest.mark.gradproof(**options): default options of the assert_gradients" in (
        result.stdout.str()
    )


# -- the command-line options -------------------------------------------------------------------
def test_help_lists_the_options(pytester):
    result = run(pytester, "--help")
    out = result.stdout.str()
    assert "--gradproof-seed=N" in out
    assert "--gradproof-mode={auto,full,directional,sampled}" in out


def test_the_seed_option_seeds_every_check_over_marks(pytester):
    pytester.makepyfile(
        """
        import pytest
        from gradproof import corpus

        def check(assert_gradients, **overrides):
            case = corpus.get_case("dropout-mlp")
            return assert_gradients(case.loss, case.grad, case.params, **overrides)

        def test_unmarked(assert_gradients):
            assert check(assert_gradients).seed == 3

        @pytest.mark.gradproof(seed=0)
        def test_marked(assert_gradients):
            assert check(assert_gradients, seed=1).seed == 3
        """
    )
    run(pytester, "--gradproof-seed=3").assert_outcomes(passed=2)


def test_the_mode_option_forces_full_sweeps_over_marks(pytester):
    pytester.makepyfile(
        """
        import pytest
        from gradproof import corpus

        @pytest.mark.gradproof(mode="directional")
        def test_marked_directional(assert_gradients):
            case = corpus.get_case("course-network")
            result = assert_gradients(case.loss, case.grad, case.params, mode="sampled")
            assert result.mode == "full"
        """
    )
    run(pytester, "--gradproof-mode=full").assert_outcomes(passed=1)


def test_an_unknown_mode_is_a_usage_error_listing_the_choices(pytester):
    result = run(pytester, "--gradproof-mode=fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'fast'" in result.stderr.str()
    assert "'auto', 'full', 'directional', 'sampled'" in result.stderr.str()


# -- registration -------------------------------------------------------------------------------
def test_the_entry_point_loads_the_plugin(pytester, monkeypatch):
    registered = [
        ep
        for ep in importlib.metadata.entry_points(group="pytest11")
        if ep.value == "gradproof.pytest_plugin"
    ]
    if not registered:
        pytest.skip("the pytest11 entry point is not installed (pyproject.toml, then pip install)")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    pytester.makepyfile(SHIPPED)
    result = pytester.runpytest("--strict-markers", "--gradproof-mode=full")
    result.assert_outcomes(failed=1)
    assert "wrong gradients: b1 (4× too large)" in result.stdout.str()
