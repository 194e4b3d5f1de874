"""Tests of utils.style against independent references: einsum and brute-force
loops for the Gram matrix, hand-computed values for the three losses, finite
differences for the TV gradient, and torchvision's own VGG-19 for the layer
names, indices and activations."""

import itertools
import math

import pytest
import torch
import torchvision

from utils import models, style

torch.manual_seed(0)


# ----------------------------------------------------------------------------- Gram matrix

def gram_brute_force(f):
    """G_ij = sum_k F_ik F_jk with explicit loops over channels and positions (C, H, W)."""
    channels, height, width = f.shape
    g = torch.zeros(channels, channels, dtype=f.dtype)
    for i, j in itertools.product(range(channels), repeat=2):
        for y, x in itertools.product(range(height), range(width)):
            g[i, j] += f[i, y, x] * f[j, y, x]
    return g


def test_gram_matches_double_loop():
    f = torch.randn(4, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(style.gram_matrix(f), gram_brute_force(f))


def test_gram_batched_matches_einsum_and_normalize():
    f = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    expected = torch.einsum("bihw,bjhw->bij", f, f)
    torch.testing.assert_close(style.gram_matrix(f), expected)
    torch.testing.assert_close(style.gram_matrix(f, normalize=True), expected / (6 * 7 * 5))
    g = style.gram_matrix(f)
    torch.testing.assert_close(g, g.transpose(1, 2))
    assert (torch.linalg.eigvalsh(g) > -1e-9).all()  # positive semi-definite


def test_gram_ignores_layout():
    f = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    shuffled = style.shuffle_positions(f, seed=3)
    assert not torch.allclose(shuffled, f)
    torch.testing.assert_close(style.gram_matrix(shuffled), style.gram_matrix(f))
    # same multiset of values in every channel: a permutation, not a resampling
    torch.testing.assert_close(shuffled.flatten(2).sort().values, f.flatten(2).sort().values)


@pytest.mark.parametrize("bad", [torch.ones(3, 4), torch.ones(1, 1, 2, 3, 4)])
def test_gram_rejects_wrong_shape(bad):
    with pytest.raises(ValueError, match="dimensions"):
        style.gram_matrix(bad)


def test_gram_rejects_non_tensor():
    with pytest.raises(TypeError):
        style.gram_matrix([[1.0, 2.0]])


# ----------------------------------------------------------------------------- losses

def test_style_layer_loss_hand_computed():
    G = torch.tensor([[1.0, 2.0], [2.0, 5.0]])
    A = torch.tensor([[0.0, 1.0], [1.0, 3.0]])
    # squared differences 1 + 1 + 1 + 4 = 7; N = 2, M = 3: 7 / (4 * 4 * 9)
    assert style.style_layer_loss(G, A, n_channels=2, n_positions=3).item() == pytest.approx(7 / 144)


def test_style_layer_loss_from_features():
    f, p = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    expected = sum((gram_brute_force(f) - gram_brute_force(p)).flatten() ** 2) / (4 * 3**2 * 20**2)
    got = style.style_layer_loss(style.gram_matrix(f), style.gram_matrix(p), 3, 20)
    assert got.item() == pytest.approx(expected.item())


def test_style_layer_loss_validates():
    with pytest.raises(ValueError, match="shape"):
        style.style_layer_loss(torch.eye(2), torch.eye(3), 2, 4)
    with pytest.raises(ValueError, match="n_positions"):
        style.style_layer_loss(torch.eye(2), torch.eye(2), 2, 0)


def test_content_loss_hand_computed():
    F = torch.tensor([1.0, 2.0, 3.0])
    P = torch.tensor([0.0, 0.0, 1.0])
    assert style.content_loss(F, P).item() == pytest.approx(0.5 * (1 + 4 + 4))
    with pytest.raises(ValueError, match="same shape"):
        style.content_loss(F, torch.zeros(4))


def test_total_variation_hand_computed():
    x = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]])
    # (0,0): right 1, down 2 -> 5 ; (0,1): right 2, down 1 -> 5
    assert style.total_variation(x, beta=2.0).item() == pytest.approx(10.0)
    assert style.total_variation(x, beta=1.0).item() == pytest.approx(2 * math.sqrt(5))


def tv_brute_force(x, beta):
    total = 0.0
    channels, height, width = x.shape
    for c, i, j in itertools.product(range(channels), range(height - 1), range(width - 1)):
        s = (x[c, i, j + 1] - x[c, i, j]) ** 2 + (x[c, i + 1, j] - x[c, i, j]) ** 2
        total += float(s) ** (beta / 2)
    return total


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0])
def test_total_variation_matches_loops_and_batches(beta):
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    expected = sum(tv_brute_force(image, beta) for image in x)
    assert style.total_variation(x, beta).item() == pytest.approx(expected)


def test_total_variation_gradient_finite_differences():
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: style.total_variation(t, beta=1.0), (x,))


def test_total_variation_gradient_is_finite_on_flat_image():
    x = torch.full((3, 4, 4), 0.5, requires_grad=True)
    style.total_variation(x, beta=1.0).backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


def test_total_variation_validates():
    with pytest.raises(ValueError, match="beta"):
        style.total_variation(torch.rand(3, 4, 4), beta=0)
    with pytest.raises(ValueError, match="2×2"):
        style.total_variation(torch.rand(3, 1, 4))


# ----------------------------------------------------------------------------- VGG features

def test_layer_names_match_torchvision_vgg19_indices():
    features = torchvision.models.vgg19(weights=None).features
    assert len(style.VGG_LAYERS) == len(features) == 37
    widths = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    for name, index in style.VGG_LAYERS.items():
        module = features[index]
        kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[name[:4]]
        assert isinstance(module, kind), (name, index, module)
        if name.startswith("conv"):
            assert module.out_channels == widths[int(name[4])], name
    # the landmarks every style-transfer paper uses
    assert style.VGG_LAYERS["conv1_1"] == 0 and style.VGG_LAYERS["relu4_2"] == 22
    assert style.VGG_LAYERS["conv5_1"] == 28 and style.VGG_LAYERS["relu5_4"] == 35


@pytest.fixture(scope="module")
def vgg19():
    return models.pretrained("vgg19")


def test_vgg_features_match_torchvision_activations(vgg19):
    names = ["conv1_1", "relu1_2", "pool1", "relu3_1", "conv4_2", "relu4_2"]
    net = style.VGGFeatures(names)
    x = torch.rand(1, 3, 40, 40, device=next(net.parameters()).device)
    got = net(x)
    assert list(got) == names
    # reference: torchvision's own layers, run one by one (cloning, as its ReLUs are in-place)
    h, reference = vgg19.normalize(x), {}
    for index, module in enumerate(vgg19.net.features[:23]):
        h = module(h.clone())
        reference[index] = h
    for name in names:
        torch.testing.assert_close(got[name], reference[style.VGG_LAYERS[name]], rtol=1e-4, atol=1e-5)
    assert got["relu3_1"].shape == (1, 256, 10, 10) and got["relu4_2"].shape == (1, 512, 5, 5)


def test_vgg_features_truncated_frozen_and_own_copy(vgg19):
    net = style.VGGFeatures(["relu1_1", "relu3_1"])
    assert list(net.body.named_children())[-1][0] == "relu3_1"
    assert len(net.body) == style.VGG_LAYERS["relu3_1"] + 2  # + the normalisation layer
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training
    assert net.body.conv1_1.weight.data_ptr() != vgg19.net.features[0].weight.data_ptr()
    assert all(p.requires_grad for p in vgg19.parameters())  # the shared model is untouched


def test_vgg_features_avg_pool_option():
    net = style.VGGFeatures(["relu3_1"], pool="avg")
    pools = [m for m in net.body if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d))]
    assert len(pools) == 2 and all(isinstance(m, torch.nn.AvgPool2d) for m in pools)


@pytest.mark.parametrize("layers", [["relu9_9"], [], "relu1_1"])
def test_vgg_features_rejects_bad_layers(layers):
    with pytest.raises(ValueError, match="layer"):
        style.VGGFeatures(layers)


# ----------------------------------------------------------------------------- optimisation

@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)  # not seed 0: that is the optimiser's noise start
    content = torch.rand(3, 32, 32, generator=g)
    stripes = torch.linspace(0, 1, 32).sin().mul(6).sin().abs()
    return content, stripes.expand(3, 32, 32).clone()


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_style_transfer_lowers_loss_and_stays_in_range(images, optimizer):
    content, style_image = images
    flags = content.requires_grad
    image, history = style.style_transfer(content, style_image, content_layer="relu2_2",
                                          style_layers=("relu1_1", "relu2_1"), steps=8,
                                          optimizer=optimizer, style_weight=1e4, tv_weight=1e-3,
                                          init="noise")
    assert image.shape == (1, 3, 32, 32)
    assert image.min() >= 0 and image.max() <= 1
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["time"]) == 8 + 1 and history["time"] == sorted(history["time"])
    assert history["evaluations"] == list(range(9))
    for i in range(len(history["loss"])):
        total = history["content"][i] + history["style"][i] + history["tv"][i]
        assert history["loss"][i] == pytest.approx(total, rel=1e-5)
    assert content.requires_grad == flags


def test_style_transfer_from_content_starts_at_zero_content_loss(images):
    content, style_image = images
    _, history = style.style_transfer(content, style_image, steps=3)
    assert history["content"][0] == pytest.approx(0.0, abs=1e-6)
    assert history["loss"][-1] < history["loss"][0]


def test_synthesize_texture_lowers_style_loss(images):
    _, texture = images
    image, history = style.synthesize_texture(texture, layers=("relu1_1", "relu2_1"), steps=10)
    assert image.shape == (1, 3, 32, 32) and 0 <= image.min() and image.max() <= 1
    assert history["loss"][-1] < 0.5 * history["loss"][0]


def test_style_transfer_validates(images):
    content, style_image = images
    with pytest.raises(ValueError, match="optimizer"):
        style.style_transfer(content, style_image, steps=1, optimizer="sgd")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        style.style_transfer(content * 255, style_image, steps=1)
    with pytest.raises(ValueError, match="init"):
        style.style_transfer(content, style_image, steps=1, init="zeros")


def test_calibrated_style_weight_balances_terms(images):
    content, style_image = images
    layers = ("relu1_1", "relu2_1")
    beta = style.calibrated_style_weight(content, style_image, ratio=2.0, content_layer="relu2_2",
                                         style_layers=layers)
    _, history = style.style_transfer(content, style_image, content_layer="relu2_2", style_layers=layers,
                                      style_weight=beta, steps=1)
    _, noise_history = style.style_transfer(content, style_image, content_layer="relu2_2",
                                            style_layers=layers, style_weight=beta, steps=1, init="noise")
    # beta * L_style(content image) == 2 * L_content(noise image); the sigmoid start moves pixels by < 1e-3
    assert history["style"][0] == pytest.approx(2.0 * noise_history["content"][0], rel=0.05)
