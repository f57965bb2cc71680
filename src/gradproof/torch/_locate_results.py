"""The result of :func:`gradproof.torch.locate`: which module's backward is wrong, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradproof.results import CheckResult

__all__ = ["LOSS_FN", "VERDICTS", "LocateResult", "ModuleVerdict"]

LOSS_FN = "loss_fn"
"""The culprit's name when the gradient reaching the model's output is already wrong."""

VERDICTS = ("culprit", "contains_culprit", "right", "receives_wrong", "not_judged")
"""What :class:`ModuleVerdict` can say of a module call.

``culprit``: the gradient reaching it is right and the one it passes on (to its
input or to its parameters) is wrong, and none of the calls inside it is to
blame, so its own backward is wrong. ``contains_culprit``: the same, explained
by a culprit inside it. ``right``: it receives and passes on right gradients.
``receives_wrong``: the gradient reaching it is already wrong, so whatever it
passes on says nothing of its own backward. ``not_judged``: nothing to measure
(no floating-point output) or not examined because the call holding it passes
on right gradients.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleVerdict:
    """What :func:`~gradproof.torch.locate` found about one call of one module.

    Attributes
    ----------
    name : str
        The module's qualified name, as ``named_modules()`` gives it
        (``""`` for the model itself).
    kind : str
        The module's class name.
    call, n_calls : int
        Which call of the module this is (0 first) and how many calls it has
        in one forward pass: a shared module has several.
    verdict : str
        One of :data:`VERDICTS`.
    output_right, input_right, params_right : bool or None
        Whether the gradient at the call's output (the one reaching it), at
        its input (the one it passes on) and at its parameters agree with
        finite differences of the loss; None where not measured.
    functions : tuple of str
        The custom autograd Functions the call runs itself (outside the
        modules it calls), by class name.
    detail : str
        For a culprit, what its wrong gradient looks like, entry by entry
        (e.g. ``analytic = 2 × numeric on every entry of its input``).
    check : CheckResult or None
        For a culprit, gradproof's entry-level check of the wrong gradient.
    """

    name: str
    kind: str
    call: int
    n_calls: int
    verdict: str
    output_right: bool | None = None
    input_right: bool | None = None
    params_right: bool | None = None
    functions: tuple[str, ...] = ()
    detail: str = ""
    check: CheckResult | None = None

    @property
    def label(self) -> str:
        """The call as the report names it: ```blocks.3.norm``` or ```mlp``` (call 2 of 2)."""
        name = f"`{self.name}`" if self.name else "the model"
        return name + (f" (call {self.call + 1} of {self.n_calls})" if self.n_calls > 1 else "")

    @property
    def what(self) -> str:
        """The module's kind and the custom Functions it calls, in words."""
        if not self.functions:
            return f"a {self.kind}"
        listed = ", ".join(f"`{f}`" for f in self.functions)
        noun = "Function" if len(self.functions) == 1 else "Functions"
        return f"a {self.kind} calling the custom autograd {noun} {listed}"

    def sentence(self) -> str:
        """One line on this call: its verdict and why."""
        if self.verdict in ("culprit", "contains_culprit"):
            wrong = []
            if self.input_right is False:
                wrong.append("the gradient it passes on is wrong")
            if self.params_right is False:
                wrong.append("the gradients of its parameters are wrong")
            if not wrong:
                wrong.append("a gradient it passes on is wrong")
            text = (
                f"{self.label} ({self.what}): the gradient reaching it is right, "
                + " and ".join(wrong)
            )
            if self.verdict == "contains_culprit":
                return text + " because of a culprit inside it."
            return text + (f": {self.detail}." if self.detail else ".")
        if self.verdict == "right":
            return f"{self.label}: receives and passes on right gradients."
        if self.verdict == "receives_wrong":
            return f"{self.label}: the gradient reaching it is already wrong (not judged)."
        return f"{self.label}: not judged" + (f": {self.detail}." if self.detail else ".")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "kind": self.kind,
            "call": self.call,
            "n_calls": self.n_calls,
            "verdict": self.verdict,
            "output_right": self.output_right,
            "input_right": self.input_right,
            "params_right": self.params_right,
            "functions": list(self.functions),
            "detail": self.detail,
            "check": None if self.check is None else self.check.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LocateResult:
    """The result of :func:`gradproof.torch.locate`.

    Attributes
    ----------
    culprits : tuple of str
        The modules whose own backward is wrong, innermost first (a culprit
        before the modules that contain it), as qualified names; ``"loss_fn"``
        when the gradient reaching the model's output is already wrong. Empty
        when every gradient examined is right.
    modules : tuple of ModuleVerdict
        The module calls examined, in execution order.
    loss_value : float
        The loss at the point.
    n_evals : int
        Loss evaluations of the finite differences, in all.
    n_forward, n_backward : int
        Forward passes of the model (those evaluations, the trace and the
        analytic passes) and backward passes.
    n_probes : int
        Activations and parameter groups whose gradient was probed.
    seconds : float
        Wall-clock time.
    notes : tuple of str
        What the search did and noticed.
    """

    culprits: tuple[str, ...]
    modules: tuple[ModuleVerdict, ...]
    loss_value: float
    n_evals: int
    n_forward: int
    n_backward: int
    n_probes: int
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether no culprit was found."""
        return not self.culprits

    def __getitem__(self, name: str) -> ModuleVerdict:
        """Return the verdict on the first examined call of the module called `name`."""
        for verdict in self.modules:
            if verdict.name == name:
                return verdict
        known = ", ".join(f"`{v.name}`" for v in self.modules)
        raise KeyError(f"no examined module named {name!r}; the examined modules are: {known}")

    def __str__(self) -> str:
        lines = []
        if not self.culprits:
            lines.append(
                "gradproof locate: no culprit: every gradient examined agrees with finite "
                "differences of the loss."
            )
        elif self.culprits == (LOSS_FN,):
            lines.append(
                "gradproof locate: the gradient reaching the model's output is already wrong: "
                "the backward of `loss_fn` is to blame, not the model's."
            )
        else:
            innermost = {v.name for v in self.modules if v.verdict == "culprit"}

            def listed(names: list[str]) -> str:
                shown = [f"`{c}`" if c else "the model" for c in names]
                return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]

            inside = [c for c in self.culprits if c not in innermost]
            lines.append(
                f"gradproof locate: the backward of "
                f"{listed([c for c in self.culprits if c in innermost])} is wrong"
                + (f" (inside {listed(inside)})." if inside else ".")
            )
            lines.append("")
            lines.extend(
                "  " + v.sentence()
                for v in self.modules
                if v.verdict in ("culprit", "contains_culprit")
            )
        lines.append("")
        lines.append("Module calls examined, in execution order:")
        lines.extend(f"  {v.verdict:<16}  {v.sentence()}" for v in self.modules)
        lines.append("")
        lines.extend(self.notes)
        lines.append(
            f"{self.n_probes} gradients probed with {self.n_evals} loss evaluations "
            f"({self.n_forward} forward and {self.n_backward} backward passes in all) "
            f"in {self.seconds:.2f} s."
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: ``json.dumps(result.to_dict())`` works."""
        return {
            "passed": self.passed,
            "culprits": list(self.culprits),
            "modules": [v.to_dict() for v in self.modules],
            "loss_value": self.loss_value,
            "n_evals": self.n_evals,
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "n_probes": self.n_probes,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }
