"""Tests for the small-image model zoo."""

from __future__ import annotations

import pytest
import torch

from raynn.core.models import MODEL_FACTORIES, count_parameters

torch.set_num_threads(1)

NAMES = sorted(MODEL_FACTORIES)
CASES = [((1, 8, 8), 10), ((1, 28, 28), 10), ((3, 32, 32), 10), ((3, 32, 32), 3)]


@pytest.mark.parametrize("in_shape,num_classes", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name: str, in_shape: tuple[int, int, int], num_classes: int) -> None:
    """Forward gives finite (N, num_classes) logits and backward reaches every parameter."""
    torch.manual_seed(0)
    model = MODEL_FACTORIES[name](in_shape, num_classes)
    model.train()
    x = torch.randn(2, *in_shape)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no grad for {pname}"
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    assert out_eval.shape == (2, num_classes)
    assert torch.isfinite(out_eval).all()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_construction(name: str) -> None:
    """The same seed yields identical parameters and buffers."""
    torch.manual_seed(123)
    a = MODEL_FACTORIES[name]((1, 8, 8), 10)
    torch.manual_seed(123)
    b = MODEL_FACTORIES[name]((1, 8, 8), 10)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# counted by hand: a Linear(i, o) has i*o weights + o biases, a Conv2d(i, o, k) i*o*k*k + o
LENET_28 = (1 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * 7 * 7 * 120 + 120) + (120 * 84 + 84) + 850
LENET_32 = (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * 8 * 8 * 120 + 120) + (120 * 84 + 84) + 850


@pytest.mark.parametrize(
    "build,expected",
    [
        (lambda: torch.nn.Linear(3, 4), 3 * 4 + 4),
        (lambda: MODEL_FACTORIES["mlp"]((1, 8, 8), 10, hidden=(4,)), 64 * 4 + 4 + 4 * 10 + 10),
        (lambda: MODEL_FACTORIES["lenet"]((1, 28, 28), 10), LENET_28),
        (lambda: MODEL_FACTORIES["lenet"]((3, 32, 32), 10), LENET_32),
        # BatchNorm: its weight and bias are parameters, its running statistics are not
        (lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)), 16 + 8),
    ],
    ids=["linear", "mlp", "lenet28", "lenet32", "batchnorm"],
)
def test_count_parameters(build, expected: int) -> None:
    """count_parameters equals a count by hand."""
    assert count_parameters(build()) == expected


def test_count_parameters_counts_a_shared_layer_once() -> None:
    layer = torch.nn.Linear(3, 4)
    assert count_parameters(torch.nn.Sequential(layer, torch.nn.ReLU(), layer)) == 16


def test_count_parameters_trainable_only() -> None:
    """trainable_only excludes frozen parameters."""
    model = MODEL_FACTORIES["mlp"]((1, 8, 8), 10, hidden=(4,))
    total = count_parameters(model)
    for p in model.net[-1].parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - (4 * 10 + 10)
    assert count_parameters(model) == total


def test_vgg_alias_and_depth() -> None:
    """The vgg alias is vgg11; configs A and D have 8 and 13 convs."""
    assert MODEL_FACTORIES["vgg"] is MODEL_FACTORIES["vgg11"]

    def convs(m: torch.nn.Module) -> int:
        return sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())

    assert convs(MODEL_FACTORIES["vgg11"]((3, 32, 32), 10)) == 8
    assert convs(MODEL_FACTORIES["vgg16"]((3, 32, 32), 10)) == 13


def test_width_mult_shrinks_models() -> None:
    """width_mult < 1 shrinks models; VGG channels never drop below 8."""
    for name in ("vgg11", "mobilenet"):
        full = count_parameters(MODEL_FACTORIES[name]((3, 32, 32), 10))
        half = count_parameters(MODEL_FACTORIES[name]((3, 32, 32), 10, width_mult=0.5))
        assert half < full
    tiny = MODEL_FACTORIES["vgg11"]((1, 8, 8), 10, width_mult=0.01)
    assert all(m.out_channels >= 8 for m in tiny.modules() if isinstance(m, torch.nn.Conv2d))
    assert tiny(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_mlp_hidden_and_dropout() -> None:
    """MLP honours hidden widths and dropout."""
    model = MODEL_FACTORIES["mlp"]((1, 8, 8), 4, hidden=(32, 16, 8), dropout=0.2)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    dims = [(m.in_features, m.out_features) for m in linears]
    assert dims == [(64, 32), (32, 16), (16, 8), (8, 4)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 3


def test_non_square_and_larger_inputs() -> None:
    """Conv models accept non-square and larger inputs."""
    for name in ("lenet", "alexnet", "vgg11", "mobilenet"):
        torch.manual_seed(0)
        model = MODEL_FACTORIES[name]((3, 12, 20), 5).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, 12, 20)).shape == (2, 5)
    model = MODEL_FACTORIES["lenet"]((3, 64, 64), 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_arguments(name: str) -> None:
    """Bad num_classes or in_shape raise ValueError."""
    with pytest.raises(ValueError):
        MODEL_FACTORIES[name]((1, 8, 8), 1)
    with pytest.raises(ValueError):
        MODEL_FACTORIES[name]((8, 8), 10)
