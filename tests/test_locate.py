"""gradproof.torch.locate: the module whose backward is wrong, found and described.

Every planted bug is first confirmed against autograd (the custom Function's backward
disagrees with autograd's gradient of the same forward written in plain torch, and the
correct Function agrees), so a test that finds the culprit finds a real one.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")

import torch

import gradproof
from gradproof import InputError
from gradproof.torch import LocateResult, locate

F = torch.nn.functional


@pytest.fixture(autouse=True)
def _one_thread():
    """Run torch on one thread here: the models are tiny, and on a loaded machine waiting for
    intra-op threads costs a thousand times the arithmetic (8 ms against 2 µs a softmax)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- custom Functions, right and wrong ------------------------------------------------------------
class LayerNormFn(torch.autograd.Function):
    """Layer norm without affine parameters; ``factor`` scales the input gradient (1 is right)."""

    @staticmethod
    def forward(ctx, x, factor):
        mu = x.mean(-1, keepdim=True)
        rstd = 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
        xhat = (x - mu) * rstd
        ctx.save_for_backward(xhat, rstd)
        ctx.factor = factor
        return xhat

    @staticmethod
    def backward(ctx, g):
        xhat, rstd = ctx.saved_tensors
        gx = (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)) * rstd
        return ctx.factor * gx, None


class SoftmaxFn(torch.autograd.Function):
    """Softmax over the last axis; ``wrong`` drops the ``- sum(s g)`` term of its backward."""

    @staticmethod
    def forward(ctx, x, wrong):
        s = torch.softmax(x, -1)
        ctx.save_for_backward(s)
        ctx.wrong = wrong
        return s

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        if ctx.wrong:
            return s * g, None
        return s * (g - (s * g).sum(-1, keepdim=True)), None


class TanhFn(torch.autograd.Function):
    """tanh; ``wrong`` uses ``1 - y`` for its derivative instead of ``1 - y**2``."""

    @staticmethod
    def forward(ctx, x, wrong):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        ctx.wrong = wrong
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * ((1 - y) if ctx.wrong else (1 - y**2)), None


class LinearFn(torch.autograd.Function):
    """``x @ w.T``; ``wrong`` doubles the weight's gradient (the input's stays right)."""

    @staticmethod
    def forward(ctx, x, w, wrong):
        ctx.save_for_backward(x, w)
        ctx.wrong = wrong
        return x @ w.T

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gw = g.transpose(-1, -2) @ x if g.dim() == 2 else torch.einsum("...i,...j->ij", g, x)
        return g @ w, (2 * gw if ctx.wrong else gw), None


# -- modules -------------------------------------------------------------------------------------
class LayerNorm(torch.nn.Module):
    def __init__(self, width, factor=1.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width) + 0.1 * torch.randn(width))
        self.bias = torch.nn.Parameter(0.1 * torch.randn(width))
        self.factor = factor

    def forward(self, x):
        return LayerNormFn.apply(x, self.factor) * self.weight + self.bias


class Activation(torch.nn.Module):
    def __init__(self, wrong=False):
        super().__init__()
        self.wrong = wrong

    def forward(self, x):
        return TanhFn.apply(x, self.wrong)


class Attention(torch.nn.Module):
    def __init__(self, width, wrong=False):
        super().__init__()
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)
        self.wrong = wrong

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = SoftmaxFn.apply(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), self.wrong)
        return self.out(weights @ v)


class Block(torch.nn.Module):
    """x + mlp(attn(norm(x))): a residual block, with an optional shared activation."""

    def __init__(self, width, *, norm_factor=1.0, wrong_softmax=False, act=None):
        super().__init__()
        self.norm = LayerNorm(width, norm_factor)
        self.attn = Attention(width, wrong_softmax)
        self.fc = torch.nn.Linear(width, width)
        self.act = act if act is not None else Activation()

    def forward(self, x):
        h = x + self.attn(self.norm(x))
        return h + self.fc(self.act(h))


class Net(torch.nn.Module):
    def __init__(self, n_blocks=3, width=6, *, bad=None, shared_act=None, head_wrong=False):
        super().__init__()
        self.embed = torch.nn.Linear(3, width)
        self.blocks = torch.nn.ModuleList(
            Block(
                width,
                norm_factor=2.0 if bad == ("norm", i) else 1.0,
                wrong_softmax=bad == ("softmax", i),
                act=shared_act,
            )
            for i in range(n_blocks)
        )
        self.head = torch.nn.Linear(width, 2)
        self.head_act = Activation(wrong=head_wrong)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head_act(self.head(h))


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def make(**kwargs):
    torch.manual_seed(0)
    net = Net(**kwargs).double()
    x = torch.randn(2, 4, 3, dtype=torch.float64)  # 2 sequences of 4 tokens
    target = torch.randn(2, 4, 2, dtype=torch.float64)
    return net, x, (lambda out: ((out - target) ** 2).mean())


# -- the ground truth ----------------------------------------------------------------------------
def _vjp(fn, x):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    u = torch.linspace(-1, 1, y.numel(), dtype=x.dtype).reshape(y.shape)
    (g,) = torch.autograd.grad(y, x, u)
    return g


@pytest.mark.parametrize(
    ("custom", "reference"),
    [
        (lambda x, bad: LayerNormFn.apply(x, 2.0 if bad else 1.0), lambda x: F.layer_norm(x, (6,))),
        (lambda x, bad: SoftmaxFn.apply(x, bad), lambda x: torch.softmax(x, -1)),
        (lambda x, bad: TanhFn.apply(x, bad), torch.tanh),
    ],
    ids=["layer norm", "softmax", "tanh"],
)
def test_the_planted_bugs_are_real_and_the_correct_functions_are_right(custom, reference):
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    truth = _vjp(reference, x)
    assert torch.allclose(_vjp(lambda t: custom(t, False), x), truth, atol=1e-10)
    assert not torch.allclose(_vjp(lambda t: custom(t, True), x), truth, atol=1e-3)


def test_the_linear_function_has_a_doubled_weight_gradient():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    grads = {}
    for wrong in (False, True):
        grads[wrong] = torch.autograd.grad(LinearFn.apply(x, w, wrong).sum(), (x, w))
    truth = torch.autograd.grad((x @ w.T).sum(), (x, w))
    assert torch.allclose(grads[False][1], truth[1]) and torch.allclose(
        grads[True][1], 2 * truth[1]
    )
    assert torch.allclose(grads[True][0], truth[0])


# -- planted bugs are found ----------------------------------------------------------------------
def test_a_wrong_layer_norm_is_the_culprit_not_the_blocks_it_feeds():
    net, x, loss = make(bad=("norm", 1))
    result = locate(net, x, loss)
    assert result.culprits == ("blocks.1.norm", "blocks.1")
    norm = result["blocks.1.norm"]
    assert norm.verdict == "culprit"
    assert norm.output_right is True and norm.input_right is False
    assert norm.functions == ("LayerNormFn",)
    # 48 entries: a sample of 8 is measured one by one, all 2 times too large.
    assert norm.detail == (
        "analytic = 2 × numeric on every entry of its input (8 of 48 entries measured)"
    )
    assert norm.check is not None and norm.check["input"].n_failed == 8
    assert result["blocks.1"].verdict == "contains_culprit"
    # The block after it passes on right gradients; the one before receives a wrong one.
    assert result["blocks.2"].verdict == "right"
    assert result["blocks.0"].verdict in ("receives_wrong", "not_judged")
    text = str(result)
    assert text.startswith(
        "gradproof locate: the backward of `blocks.1.norm` is wrong (inside `blocks.1`)."
    )
    assert (
        "`blocks.1.norm` (a LayerNorm calling the custom autograd Function `LayerNormFn`): the "
        "gradient reaching it is right, the gradient it passes on is wrong: analytic = 2 × "
        "numeric on every entry of its input (8 of 48 entries measured)." in text
    )


def test_a_wrong_attention_softmax_names_the_attention_and_its_function():
    net, x, loss = make(bad=("softmax", 2))
    result = locate(net, x, loss)
    assert result.culprits == ("blocks.2.attn", "blocks.2")
    attn = result["blocks.2.attn"]
    assert attn.functions == ("SoftmaxFn",)
    assert attn.input_right is False
    # Its own submodules are right: the bug is in the attention's own code.
    assert result["blocks.2.attn.qkv"].verdict == "receives_wrong"
    assert result["blocks.2.attn.out"].verdict == "right"


def test_a_wrong_shared_activation_is_blamed_at_its_last_call():
    torch.manual_seed(0)
    shared = Activation(wrong=True)
    net, x, loss = make(shared_act=shared)
    result = locate(net, x, loss)
    assert result.culprits == ("blocks.0.act", "blocks.2")
    act = [v for v in result.modules if v.name == "blocks.0.act"]
    # One module, called by all three blocks: the call nearest the loss is to blame.
    assert [(v.call, v.n_calls) for v in act] == [(2, 3)]
    assert act[0].verdict == "culprit" and act[0].functions == ("TanhFn",)
    assert "(call 3 of 3)" in act[0].sentence()
    assert any("Called more than once per forward pass: `blocks.0.act`" in n for n in result.notes)


def test_a_bug_in_the_last_layer_before_the_loss_is_attributed_to_it():
    net, x, loss = make(head_wrong=True)
    result = locate(net, x, loss)
    assert result.culprits == ("head_act",)
    assert result["head_act"].output_right is True
    assert result["head"].verdict == "receives_wrong"


def test_a_bug_in_the_loss_function_is_blamed_on_loss_fn():
    net, x, _ = make()
    target = torch.zeros(2, 4, 2, dtype=torch.float64)
    result = locate(net, x, lambda out: TanhFn.apply(out - target, True).pow(2).sum())
    assert result.culprits == ("loss_fn",)
    assert str(result).startswith(
        "gradproof locate: the gradient reaching the model's output is already wrong: the "
        "backward of `loss_fn` is to blame"
    )


def test_a_wrong_parameter_gradient_is_a_culprit_with_its_parameter_named():
    class Lin(torch.nn.Module):
        def __init__(self, wrong):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64))
            self.wrong = wrong

        def forward(self, x):
            return LinearFn.apply(x, self.weight, self.wrong)

    torch.manual_seed(1)
    net = torch.nn.Sequential(Lin(False), torch.nn.Tanh(), Lin(True), torch.nn.Tanh(), Lin(False))
    result = locate(net, torch.randn(5, 4, dtype=torch.float64), lambda out: out.pow(2).sum())
    assert result.culprits == ("2",)
    culprit = result["2"]
    assert culprit.input_right is True and culprit.params_right is False
    assert culprit.detail == "weight: analytic = 2 × numeric on every entry"
    assert culprit.check is not None and culprit.check.suspects == ("weight",)
    assert "the gradients of its parameters are wrong" in culprit.sentence()


def test_a_bug_in_the_models_own_forward_code_blames_the_model_itself():
    class Gated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.out = torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.out(SoftmaxFn.apply(self.fc(x), True))

    torch.manual_seed(0)
    net = Gated().double()
    result = locate(net, torch.randn(3, 4, dtype=torch.float64), lambda out: out.pow(2).sum())
    assert result.culprits == ("",)
    (model,) = [v for v in result.modules if v.name == ""]
    assert model.verdict == "culprit" and model.functions == ("SoftmaxFn",)
    assert model.sentence().startswith("the model (a Gated calling the custom autograd Function")
    assert result["out"].verdict == "right" and result["fc"].verdict == "receives_wrong"


def test_dict_outputs_and_float32_in_native_precision():
    class Heads(torch.nn.Module):
        def __init__(self, wrong):
            super().__init__()
            self.body = torch.nn.Linear(3, 5)
            self.act = Activation(wrong)
            self.score = torch.nn.Linear(5, 2)

        def forward(self, x):
            h = self.act(self.body(x))
            return {"score": self.score(h), "hidden": h}

    torch.manual_seed(4)
    x = torch.randn(6, 3, dtype=torch.float64)
    for wrong, expected in ((False, ()), (True, ("act",))):
        torch.manual_seed(4)
        net = Heads(wrong).double()
        result = locate(net, x, lambda out: out["score"].pow(2).mean() + out["hidden"].sum())
        assert result.culprits == expected
    torch.manual_seed(4)
    net32 = Heads(True)
    result = locate(
        net32, x.float(), lambda out: out["score"].pow(2).mean(), precision="native", rtol=1e-2
    )
    assert result.culprits == ("act",)
    assert next(net32.parameters()).dtype == torch.float32


def test_one_wrong_entry_of_a_large_input_gradient_is_found_by_halving():
    class Poke(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            g = g.clone()
            g[3, 5] += 1.0  # bug: one entry
            return g

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 10), Lambda(Poke.apply), torch.nn.Tanh(), torch.nn.Linear(10, 1)
    ).double()
    result = locate(net, torch.randn(8, 4, dtype=torch.float64), lambda out: out.pow(2).mean())
    assert result.culprits == ("1",)
    culprit = result["1"]
    assert culprit.functions == ("Poke",)
    assert culprit.detail.startswith("input: only this entry is wrong: input[3, 5]")
    assert culprit.check is not None
    assert [e.name for e in culprit.check["input"].failures] == ["input[3, 5]"]


# -- correct models ------------------------------------------------------------------------------
def test_a_correct_model_has_no_culprit_and_costs_a_few_evaluations():
    net, x, loss = make()
    result = locate(net, x, loss)
    assert result.culprits == () and result.passed
    assert [v.verdict for v in result.modules] == ["right"]
    assert result.n_evals <= 15
    assert str(result).startswith("gradproof locate: no culprit")


def test_a_correct_model_with_a_shared_module_passes_every_call_when_exhaustive():
    torch.manual_seed(0)
    shared = Activation()
    net, x, loss = make(shared_act=shared)
    result = locate(net, x, loss, exhaustive=True)
    assert result.culprits == ()
    assert {v.verdict for v in result.modules} == {"right"}
    assert len(result.modules) == sum(1 for _ in result.modules) > 20
    assert [v.call for v in result.modules if v.name == "blocks.0.act"] == [0, 1, 2]


def test_exhaustive_gives_every_call_after_the_culprit_a_verdict():
    net, x, loss = make(bad=("norm", 1))
    result = locate(net, x, loss, exhaustive=True)
    assert result.culprits == ("blocks.1.norm", "blocks.1")
    verdicts = {v.name: v.verdict for v in result.modules}
    # Everything nearer the loss than the culprit is judged right, inside the blocks too.
    assert verdicts["blocks.2.attn.qkv"] == verdicts["blocks.2.norm"] == "right"
    assert verdicts["head_act"] == "right"
    assert verdicts["embed"] == verdicts["blocks.0"] == "receives_wrong"


def test_a_float32_torch_model_with_builtin_layers_passes():
    torch.manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), torch.nn.GELU(), torch.nn.Linear(8, 3)
    )
    x = torch.randn(6, 5)
    result = locate(net, x, lambda out: F.cross_entropy(out, torch.arange(6) % 3))
    assert result.culprits == ()
    assert any("float64 copies" in note for note in result.notes)


def test_dropout_and_batch_norm_in_training_mode_with_a_seed():
    def net(wrong):
        torch.manual_seed(3)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 6),
            torch.nn.BatchNorm1d(6),
            torch.nn.Dropout(0.3),
            Activation(wrong),
            torch.nn.Linear(6, 1),
        ).double()

    x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    good = net(False)
    running = good[1].running_mean.clone()
    assert locate(good, x, lambda out: out.pow(2).mean(), seed=0).culprits == ()
    assert torch.equal(good[1].running_mean, running)  # the buffers were copies
    assert locate(net(True), x, lambda out: out.pow(2).mean(), seed=0).culprits == ("3",)
    with pytest.raises(gradproof.NondeterministicLossError):
        locate(net(False), x, lambda out: out.pow(2).mean())


# -- the caller's world is left alone ------------------------------------------------------------
def test_locate_leaves_the_module_and_the_random_state_as_they_were():
    net, x, loss = make(bad=("norm", 0))
    net.train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x_before = x.clone()
    torch.manual_seed(7)
    np.random.seed(7)  # noqa: NPY002 - the legacy global state is what must survive
    locate(net, x, loss, seed=3)
    drawn = (torch.rand(1), np.random.random())  # noqa: NPY002
    torch.manual_seed(7)
    np.random.seed(7)  # noqa: NPY002
    assert torch.equal(drawn[0], torch.rand(1)) and drawn[1] == np.random.random()  # noqa: NPY002
    assert net.training
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())
    assert all(p.requires_grad for p in net.parameters())
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert torch.equal(x, x_before)
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


# -- results -------------------------------------------------------------------------------------
def test_the_result_is_frozen_and_has_a_json_form():
    net, x, loss = make(bad=("norm", 1))
    result = locate(net, x, loss)
    assert isinstance(result, LocateResult)
    with pytest.raises(AttributeError):
        result.culprits = ()  # type: ignore[misc]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["culprits"] == ["blocks.1.norm", "blocks.1"]
    (norm,) = [m for m in data["modules"] if m["name"] == "blocks.1.norm"]
    assert norm["verdict"] == "culprit" and norm["check"]["verdict"] == "fail"
    assert data["n_evals"] == result.n_evals > 0
    with pytest.raises(KeyError, match="no examined module named 'nope'"):
        result["nope"]


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_is_refused_with_what_to_do():
    net, x, loss = make()
    with pytest.raises(InputError, match=r"`module` must be a torch\.nn\.Module; got a function"):
        locate(lambda t: t, x, loss)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="`loss_fn` must turn the module's output"):
        locate(net, x, 3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="`inputs` must be a tensor or a tuple"):
        locate(net, {"x": x}, loss)
    with pytest.raises(InputError, match=r"Unknown option `mode` for `gradproof\.torch\.locate`"):
        locate(net, x, loss, mode="full")
    with pytest.raises(InputError, match="`precision` must be one of 'auto', 'native'"):
        locate(net, x, loss, precision="double")
    with pytest.raises(InputError, match="`loss_fn` returned a tensor of shape"):
        locate(net, x, lambda out: out)


def test_errors_in_the_users_code_are_user_code_errors_with_the_cause():
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise ValueError("backward fell over")

    class UsesBroken(torch.nn.Module):
        def forward(self, x):
            return Broken.apply(x)

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), UsesBroken()).double()
    x = torch.ones(3, 2, dtype=torch.float64)
    with pytest.raises(gradproof.UserCodeError, match="A backward raised") as caught:
        locate(net, x, lambda out: out.sum())
    assert "backward fell over" in str(caught.value.__cause__)
    for m in net.modules():  # removed however the search ended
        assert not m._forward_hooks and not m._forward_pre_hooks
    with pytest.raises(gradproof.UserCodeError, match="The module raised ZeroDivisionError"):
        locate(torch.nn.Sequential(Lambda(lambda t: t / 0 if False else 1 // 0)), x, lambda o: o)
