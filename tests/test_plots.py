"""Figures of a check: the data they draw, and the PNG files written."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gradproof import check, course
from gradproof.results import Verdict

pytest.importorskip("matplotlib")

from gradproof.numerics.steps import default_relative_step
from gradproof.report import figures as plots
from gradproof.report.stepsweep import default_entry, step_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def course_case():
    X, Y, params = course.gradient_check_n_test_case()

    def loss(p):
        cost, _ = course.forward_propagation_n(X, Y, p)
        return float(cost)

    def grad(p):
        _, cache = course.forward_propagation_n(X, Y, p)
        return course.parameter_gradients(course.backward_propagation_n(X, Y, cache))

    return loss, grad, params


@pytest.fixture(scope="module")
def course_result():
    loss, grad, params = course_case()
    return check(loss, grad, params), loss, params


def transposed_case():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    x = rng.normal(size=4)
    params = {"W": rng.normal(size=(4, 4)), "b": rng.normal(size=4)}

    def loss(p):
        return float(np.sum((p["W"] @ x + p["b"] - A[0]) ** 2) + np.sum(A * p["W"]))

    def grad(p):
        r = p["W"] @ x + p["b"] - A[0]
        dW = 2 * np.outer(r, x) + A
        return {"W": dW.T, "b": 2 * r}  # the bug: dW transposed

    return loss, grad, params


def test_error_ratios_mark_exactly_the_wrong_entries(course_result):
    result, _, _ = course_result
    for report in result.params:
        ratios = plots.error_ratios(report)
        assert ratios.shape == report.shape
        wrong = {tuple(int(i) for i in idx) for idx in np.argwhere(ratios > 1)}
        assert len(wrong) == report.n_failed
        assert {e.index for e in report.failures} <= wrong


def test_tensor_ratios_put_the_wrong_tensors_past_one(course_result):
    result, _, _ = course_result
    rows = plots.tensor_ratios(result)
    assert [name for name, _, _ in rows] == [p.name for p in result.params]
    past_one = {name for name, ratio, _ in rows if ratio > 1}
    assert past_one == set(result.suspects) == {"W2", "b1"}
    assert all(v is Verdict.FAIL for name, _, v in rows if name in past_one)


def test_transposed_gradient_shows_an_antisymmetric_heat_map():
    loss, grad, params = transposed_case()
    result = check(loss, grad, params)
    report = result["W"]
    assert report.verdict is Verdict.FAIL
    matrix = plots.error_matrix(report)
    assert matrix.shape == (4, 4)
    assert np.allclose(np.diag(matrix), 0.0, atol=1.0)  # the diagonal is right
    off = ~np.eye(4, dtype=bool)
    wrong = np.abs(matrix) > 1
    assert wrong[off].sum() >= 10
    # (a - n) with a = n.T is antisymmetric: every wrong entry has its mirror, of opposite sign.
    assert np.array_equal(wrong, wrong.T)
    assert np.all(np.sign(matrix[wrong]) == -np.sign(matrix.T[wrong]))
    difference = report.analytic - report.numeric
    assert np.allclose(difference, -difference.T, atol=1e-6)
    with pytest.raises(ValueError, match="matrix"):
        plots.error_matrix(result["b"])


def test_step_sweep_is_a_v_around_the_chosen_step():
    def loss(p):
        return float(np.sum(np.exp(np.sin(p))))

    x = np.array([0.3, 1.7, -0.4])
    exact = float(np.exp(np.sin(1.7)) * np.cos(1.7))
    sweep = step_sweep(loss, x, "params[1]", analytic_value=exact)
    assert sweep.entry == "params[1]"
    assert sweep.reference_kind == "analytic"
    errors = sweep.errors
    best = int(np.argmin(errors))
    assert 0 < best < len(errors) - 1
    # round-off on the left: much worse at the smallest step; truncation on the right
    assert errors[0] > 1e3 * errors[best]
    assert errors[-1] > 1e3 * errors[best]
    assert np.all(np.diff(errors[best:]) > 0)  # truncation error grows steadily
    assert abs(np.log10(sweep.best_step) - np.log10(sweep.chosen_step)) <= 2
    # the extrapolated reference agrees with the exact derivative
    extrapolated = step_sweep(loss, x, "params[1]", against="extrapolated")
    assert abs(extrapolated.reference - exact) < 1e-9
    assert abs(np.log10(extrapolated.best_step) - np.log10(sweep.chosen_step)) <= 2


def test_step_sweep_defaults_to_the_worst_entry(course_result):
    result, loss, params = course_result
    name = default_entry(result)
    worst = max(result.params, key=lambda p: p.error_ratio)
    assert name == worst.failures[0].name
    sweep = step_sweep(loss, params, result=result, against="extrapolated")
    assert sweep.entry == name
    assert sweep.analytic is not None
    # the analytic value is far off: the gap dwarfs the sweep's best error
    assert abs(sweep.analytic - sweep.reference) > 1e3 * float(np.min(sweep.errors))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, None),  # the measured rule of the check, noise included
        ({"rel_step": 1e-4}, 1e-4 * 1.7),  # relative steps scale with max(1, |x|)
        ({"eps": 3e-6}, 3e-6),
    ],
    ids=["measured", "relative", "absolute"],
)
def test_step_sweep_marks_the_step_the_check_took(options, expected):
    from gradproof import check

    def noisy_loss(p):  # float32 arithmetic: noise about 1e-7, so the check steps wider
        return float(np.sum(np.sin(p.astype(np.float32))))

    x = np.array([0.3, 1.7, -0.4])
    result = check(noisy_loss, np.cos, x, **options)
    sweep = step_sweep(noisy_loss, x, "params[1]", result=result)
    if expected is None:
        rule = float(result.step.split()[1])  # "relative 0.00... × max(1, |x|) (float64)"
        assert rule > 10 * default_relative_step(np.float64)
        expected = rule * 1.7
    assert sweep.chosen_step == pytest.approx(expected, rel=1e-2)
    assert step_sweep(noisy_loss, x, "params[1]").chosen_step == pytest.approx(
        default_relative_step(np.float64) * 1.7
    )


def test_step_sweep_takes_the_rule_of_its_entrys_dtype():
    from gradproof import check

    params = {"a": np.array([0.3, 1.7]), "b": np.array([0.5, -2.5], dtype=np.float32)}

    def loss(p):
        return float(np.sum(np.sin(p["a"])) + np.sum(np.sin(p["b"])))

    def grad(p):
        return {"a": np.cos(p["a"]), "b": np.cos(p["b"])}

    result = check(loss, grad, params, precision="native")
    assert "(float32)" in result.step and "(float64)" in result.step, result.step
    # The rules as data, and as the line the reports print.
    rules = re.findall(r"relative (\S+) × max\(1, \|x\|\) \((\w+)\)", result.step)
    steps = {rule.dtype: rule.value for rule in result.step_rules}
    assert {name: float(value) for value, name in rules} == {
        name: float(f"{value:.3g}") for name, value in steps.items()
    }
    assert steps["float32"] > 100 * steps["float64"]
    assert step_sweep(loss, params, "b[1]", result=result).chosen_step == pytest.approx(
        steps["float32"] * 2.5
    )
    assert step_sweep(loss, params, "a[0]", result=result).chosen_step == pytest.approx(
        steps["float64"]
    )


def test_step_sweep_rejects_an_unknown_entry():
    from gradproof.errors import InputError

    with pytest.raises(InputError, match="no entry"):
        step_sweep(lambda p: float(np.sum(p**2)), np.ones(3), "params[7]")


def test_figures_are_matplotlib_figures(course_result):
    import matplotlib.pyplot as plt

    result, _, _ = course_result
    for figure in (
        plots.plot_relative_differences(result),
        plots.plot_analytic_vs_numeric(result["W2"]),
        plots.plot_error_heatmap(result["b1"]),
    ):
        assert figure.axes
        plt.close(figure)


def test_write_figures_writes_valid_pngs(course_result, tmp_path):
    result, loss, params = course_result
    paths = plots.write_figures(result, tmp_path / "figs", loss=loss, params=params)
    names = [p.name for p in paths]
    assert names[:2] == ["relative_differences.png", "analytic_vs_numeric.png"]
    # heat maps for the two wrong tensors (b1 is a 5 x 1 column), none for the right W1
    assert "heatmap_b1.png" in names and "heatmap_W2.png" in names
    assert "heatmap_W1.png" not in names
    assert any(n.startswith("step_sweep_") for n in names)
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5_000
    # without the loss, no step sweep (it needs new evaluations)
    again = plots.write_figures(result, tmp_path / "nosweep")
    assert not any(p.name.startswith("step_sweep") for p in again)


def test_a_probed_tensor_shows_its_probes_and_gets_no_blank_heat_map():
    import matplotlib.pyplot as plt

    from gradproof.corpus.scaling import plant_wrong_entries, relu_network

    net = relu_network((20, 15, 10, 1), n_examples=8)  # W1 and W2 are matrices
    wrong, _ = plant_wrong_entries(net.grad(net.params), "W1", 1, seed=3)
    result = check(net.loss, wrong, net.params, mode="directional")
    probed = result["W2"]  # passes along its probe: no entry measured one by one
    assert not np.isfinite(probed.numeric).any() and probed.probes
    figure = plots.plot_analytic_vs_numeric(probed)
    (ax,) = figure.axes
    assert ax.get_title() == "W2: 0 of 1 probe wrong"
    (points,) = ax.collections
    offsets = points.get_offsets()
    assert offsets[:, 0].tolist() == [p.numeric for p in probed.probes]
    assert offsets[:, 1].tolist() == [p.analytic for p in probed.probes]
    plt.close(figure)
    # The wrong tensor shows its measured entries; only it gets a heat map.
    localised = plots.plot_analytic_vs_numeric(result["W1"])
    assert localised.axes[0].get_title().endswith("wrong") and "probes" not in (
        localised.axes[0].get_title()
    )
    plt.close(localised)
    stems = [spec.stem for spec in plots.iter_figures(result)]
    assert [s for s in stems if s.startswith("heatmap")] == ["heatmap_W1"]


def test_step_sweep_reseeds_a_random_loss_as_the_check_did():
    def dropout_loss(p):  # a random mask from numpy's global generator, as dropout draws it
        mask = np.random.random(p.shape) < 0.5  # noqa: NPY002
        return float(np.sum(np.sin(p) * mask))

    x = np.array([0.3, 1.7, -0.4])
    mask = np.random.RandomState(0).random_sample(x.shape) < 0.5  # the mask of seed 0
    result = check(dropout_loss, lambda p: np.cos(p) * mask, x, seed=0)
    assert result.passed
    sweep = step_sweep(dropout_loss, x, "params[1]", result=result)
    # Re-seeded before every call, the loss is one smooth function: the V bottoms out low.
    assert float(np.min(sweep.errors)) < 1e-9


def test_step_sweep_reports_the_losss_own_error():
    from gradproof.errors import UserCodeError

    def loss(p):
        if p[0] > 1.0 + 1e-3:
            raise ValueError("outside the model's range")
        return float(np.sum(p**2))

    with pytest.raises(UserCodeError, match="during the step sweep") as raised:
        step_sweep(loss, np.array([1.0, 2.0]), "params[0]")
    assert isinstance(raised.value.__cause__, ValueError)


# The heat maps: drawn for the wrong and inconclusive tensors only, whatever their shape, with
# right entries, wrong entries and unmeasured entries in colours that cannot be confused.


def _heatmap_stems(result):
    return [spec.stem for spec in plots.iter_figures(result) if spec.stem.startswith("heatmap")]


def _image(figure):
    (ax, _colorbar) = figure.axes
    return ax, ax.images[0]


def test_heat_maps_go_to_the_wrong_tensors_not_the_right_matrices(course_result):
    result, _, _ = course_result
    assert result["b1"].shape == (5, 1) and result["W1"].shape == (5, 4)
    assert result["W1"].passed and not result["b1"].passed
    # b1, a wrong column, gets one; W1, a right matrix, gets none; the worst comes first
    assert _heatmap_stems(result) == ["heatmap_b1", "heatmap_W2"]
    assert [p.name for p in plots.heatmap_params(result)] == ["b1", "W2"]
    spec = next(s for s in plots.iter_figures(result) if s.stem == "heatmap_b1")
    assert "b1 (4 wrong, 0 inconclusive, 0 not measured)" in spec.alt


def test_a_correct_check_draws_no_heat_map():
    rng = np.random.default_rng(2)
    params = {"W": rng.normal(size=(5, 4)), "b": rng.normal(size=(5, 1)), "c": rng.normal(size=3)}

    def loss(p):
        return float(np.sum(np.tanh(p["W"] + p["b"])) + np.sum(p["c"] ** 2))

    def grad(p):
        d = 1 - np.tanh(p["W"] + p["b"]) ** 2
        return {"W": d, "b": d.sum(axis=1, keepdims=True), "c": 2 * p["c"]}

    right = check(loss, grad, params)
    assert right.passed
    assert _heatmap_stems(right) == []
    assert plots.heatmap_params(right) == []


def test_the_heat_map_of_a_wrong_column_shows_its_wrong_entries_in_red(course_result):
    import matplotlib.pyplot as plt

    result, _, _ = course_result
    report = result["b1"]
    grid = plots.heatmap_grid(report)
    assert grid.ratios.shape == (5, 1) and grid.note == ""
    assert grid.wrong.sum() == report.n_failed == 4
    assert np.array_equal(grid.wrong | grid.right, np.ones((5, 1), dtype=bool))
    figure = plots.plot_error_heatmap(report)
    ax, image = _image(figure)
    data = image.get_array()
    assert data.shape == (5, 1) and not np.ma.getmaskarray(data).any()  # all measured
    colours = image.cmap(image.norm(data))
    red, blue = colours[..., 0], colours[..., 2]
    # wrong entries land above the norm's centre (ratio 1), in the reds; right ones in the blues
    assert np.all(image.norm(data)[grid.wrong] > 0.5)
    assert np.all(image.norm(data)[grid.right] < 0.5)
    assert np.all(red[grid.wrong] > blue[grid.wrong] + 0.3)
    assert np.all(blue[grid.right] > red[grid.right] + 0.1)
    assert ax.get_title() == "b1 (5×1): error / tolerance per entry, 4 wrong"
    plt.close(figure)


def test_unmeasured_entries_are_masked_and_drawn_apart_from_right_ones():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    from gradproof.corpus.scaling import plant_wrong_entries, relu_network
    from gradproof.report.figures_heatmap import UNMEASURED_COLOUR

    net = relu_network((20, 15, 10, 1), n_examples=8)
    wrong, _ = plant_wrong_entries(net.grad(net.params), "W1", 1, seed=3)
    result = check(net.loss, wrong, net.params, mode="directional")
    report = result["W1"]  # localised: a few entries measured, the rest not
    grid = plots.heatmap_grid(report)
    measured = np.isfinite(report.numeric)
    assert np.array_equal(grid.unmeasured, ~measured)
    assert 0 < measured.sum() < measured.size
    assert grid.right.any() and grid.wrong.sum() == report.n_failed >= 1
    figure = plots.plot_error_heatmap(report)
    ax, image = _image(figure)
    # the unmeasured cells are masked: the image shows the hatched grey drawn under it there
    assert np.array_equal(np.ma.getmaskarray(image.get_array()), ~measured)
    assert image.cmap.get_bad()[3] == 0.0
    (under,) = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert under.get_hatch() and under.zorder < image.zorder
    assert under.get_facecolor() == to_rgba(UNMEASURED_COLOUR)
    # the palest right colour is blue, never the grey of "not measured"
    palest = np.array(image.cmap(0.0)[:3])
    assert palest[2] - palest[0] > 0.1
    assert np.abs(palest - np.array(to_rgba(UNMEASURED_COLOUR)[:3])).max() > 0.1
    legend = figure.legends[0]
    assert "not measured" in [t.get_text() for t in legend.get_texts()]
    plt.close(figure)


def test_vectors_and_higher_tensors_get_heat_maps_laid_out_in_two_dimensions():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    params = {
        "short": rng.normal(size=7),
        "long": rng.normal(size=100),
        "cube": rng.normal(size=(2, 3, 4)),
        "fine": rng.normal(size=5),
    }

    def loss(p):
        return float(
            np.sum(p["short"] ** 2)
            + np.sum(p["long"] ** 3)
            + np.sum(np.sin(p["cube"]))
            + np.sum(p["fine"] ** 2)
        )

    def grad(p):
        short = 2 * p["short"]
        short[3] *= 2
        long = 3 * p["long"] ** 2
        long[[5, 50, 99]] += 1.0
        cube = np.cos(p["cube"])
        cube[1, :, 2] = 0.0
        return {"short": short, "long": long, "cube": cube, "fine": 2 * p["fine"]}

    result = check(loss, grad, params)
    assert set(result.suspects) == {"short", "long", "cube"}
    assert sorted(_heatmap_stems(result)) == ["heatmap_cube", "heatmap_long", "heatmap_short"]

    short = plots.heatmap_grid(result["short"])  # a strip, 1 x 7
    assert short.ratios.shape == (1, 7) and short.note == ""
    assert np.flatnonzero(short.wrong).tolist() == [3]

    long = plots.heatmap_grid(result["long"])  # past 48 entries: rows of ceil(sqrt(100))
    assert long.ratios.shape == (10, 10) and long.note == "100 entries in rows of 10"
    assert np.flatnonzero(long.wrong).tolist() == [5, 50, 99]
    assert not long.padding.any()

    cube = plots.heatmap_grid(result["cube"])  # flattened to 2 x 12, said in the title
    assert cube.ratios.shape == (2, 12) and cube.note == "2 × 3 × 4 flattened to 2 × 12"
    assert np.argwhere(cube.wrong).tolist() == [[1, 2], [1, 6], [1, 10]]
    figure = plots.plot_error_heatmap(result["cube"])
    ax, image = _image(figure)
    assert image.get_array().shape == (2, 12)
    assert ax.get_title().endswith("\n(2 × 3 × 4 flattened to 2 × 12)")
    plt.close(figure)


def test_a_wrapped_vector_pads_its_last_row_apart_from_unmeasured_entries():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    x = np.linspace(-1.0, 1.0, 50)  # 50 entries: rows of 8, the last row holds 2
    bad = np.cos(x)
    bad[49] += 1.0
    result = check(lambda p: float(np.sum(np.sin(p))), lambda p: bad, x)
    grid = plots.heatmap_grid(result.params[0])
    assert grid.ratios.shape == (7, 8) and grid.row_width == 8
    assert grid.padding.sum() == 6 and grid.padding[-1, 2:].all()
    assert not grid.unmeasured.any()
    assert grid.wrong[-1, 1] and grid.wrong.sum() == 1
    figure = plots.plot_error_heatmap(result.params[0])
    ax, _ = _image(figure)
    # the hatching lies under the entries only: the six full rows, then the last row's two
    hatched = sorted(
        (p.get_x(), p.get_y(), p.get_width(), p.get_height())
        for p in ax.patches
        if isinstance(p, Rectangle)
    )
    assert hatched == [(-0.5, -0.5, 8, 6), (-0.5, 5.5, 2, 1)]
    plt.close(figure)


def test_inconclusive_entries_get_a_heat_map_with_their_own_mark():
    import matplotlib.pyplot as plt

    w = np.array([[0.0, 1.0, 2.0], [0.0, 3.0, -1.0]])  # |w| has kinks at the zeros
    result = check(lambda p: float(np.sum(np.abs(p))), np.sign, w)
    report = result.params[0]
    assert report.verdict is Verdict.INCONCLUSIVE
    assert _heatmap_stems(result) == ["heatmap_params"]
    grid = plots.heatmap_grid(report)
    assert np.argwhere(grid.inconclusive).tolist() == [[0, 0], [1, 0]]
    assert np.isnan(grid.ratios[grid.inconclusive]).all()
    assert grid.right.sum() == 4 and not grid.wrong.any() and not grid.unmeasured.any()
    figure = plots.plot_error_heatmap(report)
    ax, image = _image(figure)
    assert np.array_equal(np.ma.getmaskarray(image.get_array()), grid.inconclusive)
    (marks,) = ax.collections
    assert marks.get_offsets().tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert any("inconclusive" in t.get_text() for t in figure.legends[0].get_texts())
    plt.close(figure)


def test_the_heat_map_of_a_transpose_marks_mirrored_pairs_of_opposite_sign():
    import matplotlib.pyplot as plt

    loss, grad, params = transposed_case()
    result = check(loss, grad, params)
    assert _heatmap_stems(result) == ["heatmap_W"]  # b is right
    figure = plots.plot_error_heatmap(result["W"])
    ax, _ = _image(figure)
    up, down = ax.collections  # analytic above numeric, then below
    above = {(int(y), int(x)) for x, y in up.get_offsets()}
    below = {(int(y), int(x)) for x, y in down.get_offsets()}
    assert above and {(j, i) for i, j in above} == below
    plt.close(figure)


def test_a_heat_map_needs_an_entry():
    from gradproof.results import ParamReport

    empty = ParamReport(
        name="e", shape=(0, 3), dtype="float64", verdict=Verdict.PASS,
        relative_difference=0.0, max_abs_error=0.0, error_ratio=0.0, worst=None,
        failures=(), inconclusive_entries=(), n_entries=0, n_checked=0, n_failed=0,
        n_inconclusive=0, diagnosis=None, analytic=np.zeros((0, 3)),
        numeric=np.zeros((0, 3)), tolerance=np.zeros((0, 3)),
    )  # fmt: skip
    with pytest.raises(ValueError, match="no entry"):
        plots.heatmap_grid(empty)
