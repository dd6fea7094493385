"""Tests of the torch training layers (bitnn.nn)."""

import math

import pytest

torch = pytest.importorskip("torch")

from bitnn import nn as bnn  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- quantize

def test_quantize_strict_greater_than_mean():
    p = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # mean 2: the element equal to it -> 0
    assert bnn.quantize(p).tolist() == [0, 0, 0, 1, 1]
    assert bnn.quantize(p).dtype == p.dtype


def test_quantize_mean_is_per_tensor():
    p = torch.tensor([[10.0, 11.0], [0.0, 1.0]])  # mean 5.5 over the whole tensor
    assert bnn.quantize(p).tolist() == [[1, 1], [0, 0]]


@pytest.mark.parametrize("value", [0.0, 0.1, -3.7, 1e-8, 123.456])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (4, 3, 3, 3)])
def test_quantize_all_equal_is_zero(value, shape):
    p = torch.full(shape, value)
    assert not bnn.quantize(p).any()


def test_quantize_empty():
    assert bnn.quantize(torch.empty(0)).shape == (0,)


def test_ste_forward_value_and_identity_gradient():
    p = torch.randn(6, 5, requires_grad=True)
    q = bnn.quantize_ste(p)
    assert torch.equal(q.detach(), bnn.quantize(p))
    g = torch.randn(6, 5)
    q.backward(g)
    assert torch.equal(p.grad, g)


# ---------------------------------------------------------------- normalize

def test_normalize_stats():
    z = torch.randn(4, 3, 5, 6, dtype=torch.float64) * 7 + 3
    for dims in [(-1,), (1,), (1, 2, 3), -1, (0, 2), (2, 3)]:
        y = bnn.normalize(z, dims, eps=0.0)
        d = (dims,) if isinstance(dims, int) else dims
        assert torch.allclose(y.mean(d), torch.zeros((), dtype=z.dtype), atol=1e-12)
        assert torch.allclose(y.std(d, unbiased=False), torch.ones((), dtype=z.dtype), atol=1e-12)


def test_normalize_eps_and_population_variance():
    z = torch.tensor([[1.0, 3.0]])  # mean 2, population var 1
    y = bnn.normalize(z, -1, eps=3.0)
    assert torch.allclose(y, torch.tensor([[-0.5, 0.5]]))


def test_normalize_constant_input_is_zero():
    y = bnn.normalize(torch.full((2, 8), 5.0), -1, 1e-5)
    assert torch.equal(y, torch.zeros(2, 8))


# ---------------------------------------------------------------- layers

def _reference_linear(layer, x):
    w, b = layer.binary_weight(), layer.binary_bias()
    z = (x.double() @ w.double().T + b.double())
    mean = z.mean(-1, keepdim=True)
    var = ((z - mean) ** 2).mean(-1, keepdim=True)
    return (z - mean) / torch.sqrt(var + layer.eps)


@pytest.mark.parametrize("act", [None, "linear", "relu", "gelu", "softmax"])
def test_linear_matches_reference(act):
    layer = bnn.BinaryLinear(13, 9, act)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 13)
    y = layer(x)
    assert y.shape == (5, 9)
    ref = _reference_linear(layer, x)
    ref = {None: ref, "linear": ref, "relu": torch.relu(ref),
           "gelu": 0.5 * ref * (1 + torch.erf(ref / math.sqrt(2))),
           "softmax": torch.softmax(ref, -1)}[act]
    assert torch.allclose(y.double(), ref, atol=1e-5)
    assert layer.activation == (act or "linear")


def test_linear_params_and_bits():
    layer = bnn.BinaryLinear(10, 4)
    assert layer.weight.shape == (4, 10) and layer.bias.shape == (4,)
    assert not layer.bias.any()  # zero bias init
    limit = math.sqrt(6 / (10 + 4))  # Glorot uniform
    assert layer.weight.abs().max() <= limit
    bw, bb = layer.binary_weight(), layer.binary_bias()
    assert bw.shape == (4, 10) and set(bw.unique().tolist()) <= {0.0, 1.0}
    assert not bb.any()  # all-equal bias -> zeros


def test_linear_sequence_input():
    layer = bnn.BinaryLinear(8, 6, "gelu")
    assert layer(torch.randn(2, 3, 8)).shape == (2, 3, 6)


def test_gradients_reach_float_params():
    layer = bnn.BinaryLinear(8, 6, "relu")
    with torch.no_grad():
        layer.bias.normal_()
    layer(torch.randn(4, 8)).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.bias.grad is not None


@pytest.mark.parametrize("norm", ["chw", "c"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv_same_shape_and_norm(norm, k):
    layer = bnn.BinaryConv2d(3, 7, k, None, norm=norm)
    assert layer.weight.shape == (7, 3, k, k) and layer.bias.shape == (7,)
    x = torch.randn(2, 3, 9, 6)
    y = layer(x)
    assert y.shape == (2, 7, 9, 6)
    dims = (1, 2, 3) if norm == "chw" else (1,)
    assert torch.allclose(y.mean(dims), torch.zeros(()), atol=1e-5)
    assert torch.allclose(y.std(dims, unbiased=False), torch.ones(()), atol=1e-3)
    # against an explicit float conv with the bits
    z = torch.nn.functional.conv2d(x.double(), layer.binary_weight().double(),
                                   layer.binary_bias().double(), padding=k // 2)
    ref = bnn.normalize(z, dims, layer.eps)
    assert torch.allclose(y.double(), ref, atol=1e-5)


def test_conv_unbatched_input():
    layer = bnn.BinaryConv2d(2, 4, 3, "relu")
    assert layer(torch.randn(2, 5, 5)).shape == (4, 5, 5)


def test_train_and_eval_give_same_output():
    for layer, x in [(bnn.BinaryLinear(6, 5, "relu"), torch.randn(3, 6)),
                     (bnn.BinaryConv2d(2, 3, 3, "relu"), torch.randn(2, 2, 5, 5)),
                     (bnn.BinaryCNN(1, 4, (3, 5), 3, (6,)), torch.randn(2, 1, 8, 8))]:
        layer.train()
        a = layer(x)
        layer.eval()
        b = layer(x)
        assert torch.equal(a, b)


# ---------------------------------------------------------------- CNN

def test_cnn_probabilities_and_logits():
    model = bnn.BinaryCNN(in_channels=1, num_classes=10, channels=(4, 8, 8), fc_units=(16, 16))
    x = torch.randn(3, 1, 28, 28)
    p = model(x)
    assert p.shape == (3, 10)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-6)
    assert torch.allclose(p, torch.softmax(model.logits(x), -1))
    assert torch.allclose(model.log_probs(x).exp(), p, atol=1e-6)


def test_cnn_default_is_paper_shape():
    model = bnn.BinaryCNN()
    n = sum(p.numel() for p in model.parameters())
    assert n == 1_403_653  # docs/maths.md, The image classifier: 1.40 M parameters with f=3
    kinds = [k for k, _ in model.ops()]
    assert kinds == (["conv", "conv", "maxpool"] * 4 + ["conv", "conv", "gap"]
                     + ["linear"] * 3)
    assert model.ops()[-1][1].activation == "softmax"
    assert model.config["channels"] == [32, 64, 64, 128, 256]


def test_cnn_odd_widths_kernel5_odd_input():
    model = bnn.BinaryCNN(in_channels=2, num_classes=3, channels=(5, 7), kernel_size=5,
                          fc_units=(9,), norm="c")
    assert model(torch.randn(2, 2, 11, 13)).shape == (2, 3)
    convs = [m for k, m in model.ops() if k == "conv"]
    assert [c.weight.shape for c in convs] == [(5, 2, 5, 5), (5, 5, 5, 5), (7, 5, 5, 5),
                                               (7, 7, 5, 5)]
    assert all(c.norm == "c" for c in convs)


def test_cnn_no_hidden_fc():
    model = bnn.BinaryCNN(1, 4, (3,), 3, ())
    assert model(torch.randn(1, 1, 4, 4)).shape == (1, 4)


def test_fp32_baseline():
    model = bnn.BinaryCNN(1, 10, (4, 8), 3, (16, 16), binary=False)
    assert not model.config["binary"]
    drops = [m.p for m in model.hidden if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.4, 0.3]
    assert not any(isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d)) and m.binary
                   for m in model.modules())
    x = torch.randn(4, 1, 12, 12)
    model.train()
    loss = torch.nn.functional.cross_entropy(model.logits(x), torch.arange(4))
    loss.backward()
    model.eval()
    p = model(x)
    assert torch.allclose(p.sum(-1), torch.ones(4), atol=1e-6)
    assert torch.equal(p, model(x))  # eval mode is deterministic
    twin = bnn.FloatCNN(1, 10, (4, 8), 3, (16, 16))
    assert type(twin.ops()[0][1]) is bnn.FloatConv2d
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in model.parameters())


def test_binary_cnn_trains():
    """Gradients reach every latent weight, steps change them, and the loss on
    a fixed batch goes down (seed 0: 1.81 -> 1.13 in 40 steps, measured)."""
    model = bnn.BinaryCNN(1, 3, (4,), 3, (8,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for step in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.logits(x), y)
        loss.backward()
        if step == 0:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert losses[-1] < 0.8 * losses[0]


# ---------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("make", [
    lambda: bnn.BinaryLinear(4, 3, "tanh"),
    lambda: bnn.BinaryLinear(0, 3),
    lambda: bnn.BinaryLinear(4, 3, eps=0.0),
    lambda: bnn.BinaryConv2d(3, 4, 2),
    lambda: bnn.BinaryConv2d(3, 4, 0),
    lambda: bnn.BinaryConv2d(3, 4, 3, norm="hw"),
    lambda: bnn.BinaryConv2d(3, 4, 3, activation="sigmoid"),
    lambda: bnn.BinaryCNN(channels=()),
    lambda: bnn.BinaryCNN(channels=(8, 0)),
    lambda: bnn.BinaryCNN(kernel_size=4),
    lambda: bnn.BinaryCNN(norm="bn"),
    lambda: bnn.BinaryCNN(num_classes=0),
    lambda: bnn.BinaryCNN(fc_units=16),
    lambda: bnn.BinaryCNN(binary=False, dropout=(1.0,)),
])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_cnn_config_round_trip():
    model = bnn.BinaryCNN(1, 10, (3, 5), 5, (7,), norm="c", eps=1e-3)
    twin = bnn.BinaryCNN(**model.config)
    assert twin.config == model.config
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 9, 9)
    assert torch.equal(twin(x), model(x))
    assert all(m.eps == 1e-3 for _, m in model.ops() if hasattr(m, "eps"))
