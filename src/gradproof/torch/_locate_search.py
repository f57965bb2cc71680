"""The search of :func:`gradproof.torch.locate`: probes of activations, level by level.

Note [Where the error enters]
    Backpropagation runs from the loss towards the input. If one module's
    backward is wrong, the gradient at its output (computed before it runs)
    is right and the gradient it passes on to its input or to its parameters
    is wrong; every module that runs after it in the backward pass (before it
    in the forward) then receives a wrong gradient and passes it on, right
    backward or not. So a module call is to blame when the gradient reaching
    it is right and one it passes on is wrong, and a call that receives a
    wrong gradient cannot be judged by finite differences of the loss at all.

    The search starts at the model itself (its output: the gradient that
    ``loss_fn`` delivers; its input and parameters: the whole backward) and
    descends only into calls to blame, one level of the call tree at a time.
    First the outputs of the calls at that level, :data:`OUTPUT_CHUNK` at a
    time from the last call back, stopping after the first group with a
    wrong one: the calls before it run earlier in the forward pass, so the
    culprit nearest the loss is not among them (a second bug there waits for
    the first to be fixed). Then, for each call whose output gradient is
    right, what it passes on: its inputs and its parameters together, in one
    probe (a shared module's parameters only when every call of it receives
    a right gradient, since their gradient sums over the calls). Each gradient is
    probed along one random direction, a scalar parameter of one
    :func:`~gradproof.checking.check.check_with_options` per stage, so it
    gets gradproof's error-aware tolerance and its re-measurement at
    smaller steps (Note [Verdict pipeline]). A call to blame with no culprit
    among its children is a culprit itself (the bug is in its own code: a
    custom Function or an operation between its submodules). Only then are
    a culprit's wrong gradients checked entry by entry, to say what the error
    looks like. A right model costs two probes; a wrong one a probe or two
    per call on the path to the culprit and at its levels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from gradproof.checking.check import check_with_options
from gradproof.checking.options import CheckOptions
from gradproof.errors import UserCodeError
from gradproof.results import CheckResult, Verdict
from gradproof.torch._convert import _describe_error, _random_like, _to_numpy
from gradproof.torch._locate_model import Site, _Call, _Model, custom_functions
from gradproof.torch._locate_results import LOSS_FN, ModuleVerdict
from gradproof.torch._run import _rename

Target = tuple[Site | str, torch.Tensor | None]
"""An activation (a site) or a parameter (its name), and the direction moved (None: every entry)."""

FULL_ENTRIES = 32
"""A culprit's wrong gradient with at most this many entries is checked entry by entry."""

OUTPUT_CHUNK = 4
"""Calls whose output gradients are probed together, the last ones of a level first."""

SAMPLED_ENTRIES = 8
"""Entries sampled from a larger wrong gradient to say what it looks like."""


@dataclass(frozen=True, slots=True)
class _Probe:
    """One scalar (or, to localise, one tensor) of a check: the loss moved along targets."""

    label: str
    targets: tuple[Target, ...]
    shape: tuple[int, ...] = ()


class _Search:
    """The state of one search: the model, its calls, what was found, what it cost."""

    def __init__(
        self,
        model: _Model,
        calls: list[_Call],
        options: CheckOptions,
        *,
        rng: np.random.Generator,
        exhaustive: bool,
    ) -> None:
        self.model = model
        self.calls = calls
        self.options = options
        self.rng = rng
        self.exhaustive = exhaustive
        self.n_evals = 0
        self.n_probes = 0
        self.inconclusive: list[str] = []
        self.output_right: dict[int, bool | None] = {}
        self.input_right: dict[int, bool | None] = {}
        self.params_right: dict[str, bool | None] = {}
        self.param_owner: dict[str, int] = {}
        self.verdicts: dict[int, str] = {}
        self.details: dict[int, tuple[str, CheckResult | None]] = {}

    # -- probes --------------------------------------------------------------------------------
    def _direction(self, shape: tuple[int, ...]) -> torch.Tensor:
        return _random_like(self.rng, shape, self.model.device)

    def run(self, probes: list[_Probe], options: CheckOptions) -> CheckResult:
        """Check the loss's derivatives along the probes' targets with gradproof."""
        aliases = {f"gpl{i}": p for i, p in enumerate(probes)}
        model = self.model

        def offsets(
            coefficients: Mapping[str, torch.Tensor],
        ) -> tuple[dict[Site, torch.Tensor], dict[str, torch.Tensor]]:
            sites: dict[Site, torch.Tensor] = {}
            params: dict[str, torch.Tensor] = {}
            for alias, probe in aliases.items():
                c = coefficients[alias]
                for target, direction in probe.targets:
                    delta = c if direction is None else c * direction
                    if isinstance(target, str):
                        params[target] = delta.to(model.params[target].dtype)
                    else:
                        sites[target] = delta
            return sites, params

        def loss(p: Mapping[str, np.ndarray]) -> float:
            with torch.no_grad():
                coefficients = {
                    a: torch.as_tensor(np.asarray(v, np.float64), device=model.device)
                    for a, v in p.items()
                }
                return float(model.evaluate(*offsets(coefficients)))

        def grad(p: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            leaves = {
                a: torch.tensor(np.asarray(v, np.float64), device=model.device, requires_grad=True)
                for a, v in p.items()
            }
            value = model.evaluate(*offsets(leaves))
            model.n_backward += 1
            if not value.requires_grad:
                return {a: np.zeros_like(np.asarray(v)) for a, v in p.items()}
            try:
                grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
            except Exception as exc:
                raise UserCodeError(
                    f"A backward raised {_describe_error(exc)}", function="backward"
                ) from exc
            return {
                a: (np.zeros(leaf.shape) if g is None else _to_numpy(g))
                for (a, leaf), g in zip(leaves.items(), grads, strict=True)
            }

        params = {a: np.zeros(p.shape) for a, p in aliases.items()}
        result = check_with_options(loss, grad, params, options)
        self.n_evals += result.n_evals
        labels = {a: p.label for a, p in aliases.items()}
        pattern = re.compile(r"\b(" + "|".join(re.escape(a) for a in labels) + r")\b")
        renamed: CheckResult = _rename(
            result, lambda text: pattern.sub(lambda m: labels[m[1]], text)
        )
        return renamed

    def probe(self, probes: list[_Probe]) -> dict[str, bool]:
        """Probe each target group along its random direction: label -> right (or unjudged)."""
        if not probes:
            return {}
        self.n_probes += len(probes)
        result = self.run(probes, self.options.replace(mode="full"))
        found = {}
        for i, probe in enumerate(probes):
            report = result.params[i]
            found[probe.label] = report.verdict is not Verdict.FAIL
            if report.verdict is Verdict.INCONCLUSIVE:
                self.inconclusive.append(probe.label)
        return found

    def _site_probe(self, call: _Call, where: str, position: int, shape: tuple[int, ...]) -> _Probe:
        site: Site = (call.key, where, position)
        return _Probe(f"{call.key}:{where}:{position}", ((site, self._direction(shape)),))

    def _param_names(self, module: str) -> list[str]:
        prefix = f"{module}." if module else ""
        return [n for n in self.model.params if n.startswith(prefix) and n in self.model.trainable]

    # -- the search ------------------------------------------------------------------------------
    def search(self, level: list[int]) -> list[int]:
        """Judge the calls at one level of the call tree; return the culprits found below it."""
        calls = self.calls
        # Stage 1: the gradient reaching each call, from the last call back (Note [Where the
        # error enters]): once one is wrong, the calls before it run earlier in the forward
        # pass, and the culprit nearest the loss is not among them.
        for chunk in self._chunks(level):
            wanted = [
                j
                for j, c in enumerate(calls)
                if c.name in {calls[i].name for i in chunk} and j not in self.output_right
            ]
            out_probes = {
                j: [self._site_probe(calls[j], "output", pos, s) for pos, s in calls[j].outputs]
                for j in wanted
            }
            found = self.probe([p for ps in out_probes.values() for p in ps])
            for j, ps in out_probes.items():
                self.output_right[j] = all(found[p.label] for p in ps) if ps else None
            if not self.exhaustive and any(self.output_right[i] is False for i in chunk):
                break
        # Stage 2: what the calls whose output gradient is right pass on, to their inputs and
        # parameters together (Note [Where the error enters]).
        # The model's own output may have no tensor to perturb (a dict of labels and losses):
        # what reaches it comes from `loss_fn`, which is then taken on trust (a note says so).
        right = [i for i in level if self.output_right.get(i) or (i == 0 and not calls[0].outputs)]
        passes_on = {}
        for i in right:
            call = calls[i]
            targets: list[Target] = [
                ((call.key, "input", pos), self._direction(shape)) for pos, shape in call.inputs
            ]
            if call.name not in self.params_right and all(
                self.output_right.get(j) or j == 0
                for j, c in enumerate(calls)
                if c.name == call.name
            ):
                self.params_right[call.name] = None  # judged with this call
                self.param_owner[call.name] = i
                targets += [
                    (n, self._direction(tuple(self.model.params[n].shape)))
                    for n in self._param_names(call.name)
                ]
            if targets:
                passes_on[i] = _Probe(f"{call.key}:passes on", tuple(targets))
        found = self.probe(list(passes_on.values()))
        culprits: list[int] = []
        for i in level:
            call = calls[i]
            if i not in self.output_right:
                self.verdicts[i] = "not_judged"
                continue
            if self.output_right[i] is None and i != 0:
                self.verdicts[i] = "not_judged"
                continue
            if self.output_right[i] is False:
                self.verdicts[i] = "receives_wrong"
                continue
            if i not in passes_on or found[passes_on[i].label]:
                self.verdicts[i] = "right"
                self.input_right[i] = True if call.inputs else None
                if self.param_owner.get(call.name) == i and self._param_names(call.name):
                    self.params_right[call.name] = True
                if self.exhaustive and call.children:
                    culprits.extend(self.search(call.children))
                continue
            inner = self.search(call.children) if call.children else []
            if inner:
                self.verdicts[i] = "contains_culprit"
                culprits.extend(inner)
            else:
                self.verdicts[i] = "culprit"
                culprits.append(i)
        return culprits

    def _chunks(self, level: list[int]) -> list[list[int]]:
        """Split the calls of a level into groups, the last calls first."""
        backwards = level[::-1]
        size = len(level) if self.exhaustive else OUTPUT_CHUNK
        return [backwards[k : k + size] for k in range(0, len(backwards), size)]

    def locate(self) -> list[int] | None:
        """Search from the model itself; None when ``loss_fn``'s backward is to blame."""
        culprits = self.search([0])
        if self.output_right.get(0) is False:
            return None
        return culprits

    # -- describing a culprit --------------------------------------------------------------------
    def describe(self, i: int) -> tuple[str, CheckResult | None]:
        """Check a culprit's wrong gradients entry by entry: what they look like, in words.

        Its inputs first; its parameters only when no input is wrong (each
        costs a few dozen evaluations on a large tensor).
        """
        call = self.calls[i]
        for pos, shape in call.inputs:
            site: Site = (call.key, "input", pos)
            n = int(np.prod(shape))
            label = "input" if len(call.inputs) == 1 else f"input{pos}"
            result = self._localise([_Probe(label, ((site, None),), shape)], n)
            report = result.params[0]
            if report.verdict is Verdict.FAIL and report.diagnosis is not None:
                self.input_right[i] = False
                which = "its input" if len(call.inputs) == 1 else f"its input {pos}"
                summary = report.diagnosis.summary
                if summary.endswith("on every entry"):
                    text = f"{summary} of {which}"
                else:
                    text = f"{which.removeprefix('its ')}: {summary}"
                return text + _coverage(report.n_checked, n), result
        self.input_right[i] = True if call.inputs else None
        params = self._param_names(call.name)
        if self.param_owner.get(call.name) != i or not params:
            return "", None
        prefix = f"{call.name}." if call.name else ""
        probes = [
            _Probe(n.removeprefix(prefix), ((n, None),), tuple(self.model.params[n].shape))
            for n in params
        ]
        result = self._localise(probes, sum(int(np.prod(p.shape)) for p in probes))
        parts = [
            f"{r.name}: {r.diagnosis.summary}"
            for r in result.params
            if r.verdict is Verdict.FAIL and r.diagnosis is not None
        ]
        self.params_right[call.name] = not parts
        return "; ".join(parts), result

    def _localise(self, probes: list[_Probe], n: int) -> CheckResult:
        if n <= FULL_ENTRIES:
            return self.run(probes, self.options.replace(mode="full"))
        # A wrong factor touches every entry: a few sampled entries show it. A few wrong
        # entries are missed by sampling, and found by halving (Note [Localisation]).
        sampled = self.run(
            probes, self.options.replace(mode="sampled", n_samples=SAMPLED_ENTRIES * len(probes))
        )
        if any(r.verdict is Verdict.FAIL for r in sampled.params):
            return sampled
        return self.run(probes, self.options.replace(mode="directional"))

    def functions(self, culprits: list[int]) -> dict[int, tuple[str, ...]]:
        """Name the custom autograd Functions each culprit runs itself."""
        if not culprits:
            return {}
        fns = self.model.grad_fns()
        found = {}
        for i in culprits:
            call = self.calls[i]
            if call.key not in fns:
                continue
            inputs, outputs = fns[call.key]
            inner = [
                (fns[self.calls[c].key][1], fns[self.calls[c].key][0])
                for c in call.children
                if self.calls[c].key in fns
            ]
            found[i] = tuple(custom_functions(outputs, inputs, inner))
        return found

    def verdicts_in_order(self, culprits: list[int]) -> list[ModuleVerdict]:
        fns = self.functions(
            [i for i in self.verdicts if self.verdicts[i] in ("culprit", "contains_culprit")]
        )
        out = []
        for i in sorted(self.verdicts):
            call = self.calls[i]
            detail, check = self.details.get(i, ("", None))
            if self.verdicts[i] == "not_judged":
                detail = (
                    "it has no floating-point output"
                    if i in self.output_right
                    else "it runs before a call that already receives a wrong gradient"
                )
            out.append(
                ModuleVerdict(
                    name=call.name,
                    kind=call.kind,
                    call=call.key[1],
                    n_calls=call.n_calls,
                    verdict=self.verdicts[i],
                    output_right=self.output_right.get(i),
                    input_right=self.input_right.get(i),
                    params_right=self.params_right.get(call.name),
                    functions=fns.get(i, ()),
                    detail=detail,
                    check=check,
                )
            )
        return out


def _coverage(n_checked: int, n: int) -> str:
    return "" if n_checked >= n else f" ({n_checked} of {n} entries measured)"


def culprit_names(search: _Search, culprits: list[int] | None) -> tuple[str, ...]:
    """Name the culprits innermost first: the culprits, then the calls that contain them."""
    if culprits is None:
        return (LOSS_FN,)
    depth = {}
    for i in range(len(search.calls)):
        d, parent = 0, search.calls[i].parent
        while parent is not None:
            d, parent = d + 1, search.calls[parent].parent
        depth[i] = d
    containing = sorted(
        (i for i, v in search.verdicts.items() if v == "contains_culprit" and i != 0),
        key=lambda i: (-depth[i], i),
    )
    names: list[str] = []
    for i in [*culprits, *containing]:
        if search.calls[i].name not in names:
            names.append(search.calls[i].name)
    return tuple(names)
