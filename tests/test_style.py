"""Tests of utils.style against independent references: brute-force loops and
einsum for the Gram matrix, hand-computed losses, BatchNorm recomputed by hand
for the pre-activation features, torchvision's VGG-19 run layer by layer,
numpy's histogramdd and a looped radial average for the statistics, the YIQ
definition for colour preservation, and the projection of a separable
quadratic for the bounded optimiser. Texture quality is judged by statistics
the network never sees, on the trained network and on a random-weight control."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from utils import assets, core, models, style

torch.manual_seed(0)


@pytest.fixture(scope="module")
def net():
    return style.style_net()


@pytest.fixture(scope="module")
def random_net():
    return style.style_net(models.untrained("efficientnet_lite0"))


@pytest.fixture(scope="module")
def vgg():
    return models.untrained("vgg19")


@pytest.fixture(scope="module")
def painting():
    return assets.load_image("starry_night", size=176)


# ----------------------------------------------------------------------------- Gram matrix

def gram_brute_force(f):
    """G_ij = (1/M) sum_k F_ik F_jk with explicit loops over channels and positions (C, H, W)."""
    channels, height, width = f.shape
    g = torch.zeros(channels, channels, dtype=f.dtype)
    for i, j in itertools.product(range(channels), repeat=2):
        for y, x in itertools.product(range(height), range(width)):
            g[i, j] += f[i, y, x] * f[j, y, x]
    return g / (height * width)


def test_gram_matches_double_loop():
    f = torch.randn(4, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(style.gram_matrix(f), gram_brute_force(f))


def test_gram_batched_matches_einsum_symmetric_psd():
    f = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    g = style.gram_matrix(f)
    torch.testing.assert_close(g, torch.einsum("bihw,bjhw->bij", f, f) / 35)
    torch.testing.assert_close(g, g.transpose(1, 2))
    assert (torch.linalg.eigvalsh(g) > -1e-9).all()


def test_gram_ignores_layout():
    f = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    shuffled = style.shuffle_positions(f, seed=3)
    assert not torch.allclose(shuffled, f)
    torch.testing.assert_close(style.gram_matrix(shuffled), style.gram_matrix(f))
    torch.testing.assert_close(shuffled.flatten(2).sort().values, f.flatten(2).sort().values)  # a permutation


def test_gram_is_comparable_across_sizes_and_aspect_ratios():
    """The average over positions: a map tiled 1×3 (another aspect ratio, three times the size) has the same G."""
    f = torch.randn(5, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(style.gram_matrix(f.repeat(1, 1, 3)), style.gram_matrix(f))


@pytest.mark.parametrize("bad", [torch.ones(3, 4), torch.ones(1, 1, 2, 3, 4), [[1.0]]])
def test_gram_rejects_wrong_input(bad):
    with pytest.raises(ValueError, match="features must be"):
        style.gram_matrix(bad)


# ----------------------------------------------------------------------------- losses

def test_style_layer_loss_hand_computed_and_scale_free():
    G = torch.tensor([[1.0, 2.0], [2.0, 5.0]])
    A = torch.tensor([[0.0, 1.0], [1.0, 3.0]])
    # squared differences 1 + 1 + 1 + 4 = 7; |A|^2 = 0 + 1 + 1 + 9 = 11
    assert style.style_layer_loss(G, A).item() == pytest.approx(7 / 11)
    assert style.style_layer_loss(100 * G, 100 * A).item() == pytest.approx(7 / 11)
    with pytest.raises(ValueError, match="same layer"):
        style.style_layer_loss(torch.eye(2), torch.eye(3))


def test_content_loss_hand_computed():
    F_, P = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 1.0])
    assert style.content_loss(F_, P).item() == pytest.approx((1 + 4 + 4) / 1)
    assert style.content_loss(torch.zeros(3), torch.tensor([1.0, 2.0, 2.0])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        style.content_loss(F_, torch.zeros(4))


def test_style_loss_is_the_mean_over_layers():
    grams = {"a": torch.eye(2)[None], "b": torch.ones(3, 3)[None]}
    targets = {"a": 2 * torch.eye(2), "b": torch.ones(3, 3)}
    assert style.style_loss(grams, targets).item() == pytest.approx((0.25 + 0.0) / 2)
    with pytest.raises(ValueError, match="every target layer"):
        style.style_loss({"a": torch.eye(2)[None]}, targets)


# ----------------------------------------------------------------------------- reading the networks

def test_efficientnet_recipe_reads_features_before_the_relu6(net):
    assert net.style_layers == ("net.bn1.drop", *(f"net.blocks.{s}.0.bn1.drop" for s in range(1, 6)))
    assert net.content_layer == "net.blocks.3" and net.upsample == 2 and net.pixel_gram
    x = torch.rand(1, 3, 24, 24)
    stem = net.features(x, ["net.bn1.drop"])["net.bn1.drop"]
    # reference: the stem by hand, on the 2x enlarged image, BatchNorm in inference form, no clamp
    big = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    model = net.model
    conv = model.net.conv_stem(model.normalize(big))
    bn = model.net.bn1
    expected = F.batch_norm(conv, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    torch.testing.assert_close(stem, expected, rtol=1e-4, atol=1e-5)
    assert stem.shape == (1, 32, 24, 24)  # stride 2 on the enlarged image: the image's own resolution
    assert stem.min() < 0 or stem.max() > 6  # values the clamp would have cut
    after = core.capture(model, big, ["net.bn1"])["net.bn1"]
    torch.testing.assert_close(after, stem.clamp(0, 6))


def test_pixel_gram_is_the_colour_covariance(net):
    x = torch.rand(1, 3, 16, 12, generator=torch.Generator().manual_seed(5))
    grams, _ = net.grams(x)
    pixels = x[0].flatten(1).double().numpy()
    np.testing.assert_allclose(grams["pixel covariance"][0].double().numpy(), np.cov(pixels, bias=True),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grams["pixels"][0].double().numpy(), pixels @ pixels.T / pixels.shape[1], rtol=1e-5)
    assert set(grams) == {*net.style_layers, "pixels", "pixel covariance"}


def test_features_leave_the_model_untouched(net):
    flags = [p.requires_grad for p in net.model.parameters()]
    net.features(torch.rand(1, 3, 16, 16), list(net.style_layers))
    assert [p.requires_grad for p in net.model.parameters()] == flags and not net.model.training
    assert net.model.net.bn1.act.inplace  # inspection mode switched it off only for the pass


def test_vgg_layer_names_are_gatys_names(vgg):
    features = vgg.net.features
    assert len(style.VGG_LAYERS) == len(features) == 37
    widths = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    for name, module_name in style.VGG_LAYERS.items():
        module = features[int(module_name.rsplit(".", 1)[1])]
        kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[name[:4]]
        assert isinstance(module, kind), (name, module)
        if name.startswith("conv"):
            assert module.out_channels == widths[int(name[4])], name
    assert style.VGG_LAYERS["relu4_2"] == "net.features.22" and style.VGG_LAYERS["relu5_1"] == "net.features.29"


def test_vgg_recipe_matches_torchvision_layer_by_layer(vgg):
    net = style.style_net(vgg)
    assert net.content_layer == style.VGG_LAYERS["relu4_2"] and net.upsample == 1 and not net.pixel_gram
    x = torch.rand(1, 3, 40, 40)
    got = net.features(x, [*net.style_layers, net.content_layer])
    h, reference = vgg.normalize(x), {}
    for index, module in enumerate(vgg.net.features[:30]):
        h = module(h.clone())  # cloning, as its ReLUs are in-place
        reference[f"net.features.{index}"] = h
    for name, value in got.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-5)


def test_style_net_takes_gatys_names_and_refuses_unknown_layers(vgg):
    assert style.style_net(vgg, style_layers=["relu1_1", "relu2_1"]).style_layers == ("net.features.1",
                                                                                      "net.features.6")
    with pytest.raises(ValueError, match="no module named 'relu9_9'"):
        style.style_net(vgg, style_layers=["relu9_9"])
    with pytest.raises(ValueError, match="no module named 'net.blocks.9'"):
        style.style_net(content_layer="net.blocks.9")
    with pytest.raises(ValueError, match="non-empty list"):
        style.style_net(style_layers="net.blocks.1")
    with pytest.raises(ValueError, match="No style recipe"):
        style.style_net(models.MnistCNN())


def test_min_style_size_is_the_deepest_receptive_field(net):
    field = core.receptive_field(net.model, "net.blocks.5.0.bn1.drop")["size"]
    assert net.min_style_size() == math.ceil(field / 2) == 170


# ----------------------------------------------------------------------------- the optimiser

def test_minimize_in_box_projects_a_separable_quadratic():
    """min ||x - t||^2 over the box has the closed-form solution clamp(t, 0, 1)."""
    t = torch.linspace(-0.5, 1.5, 48).reshape(1, 3, 4, 4)
    x, history = style.minimize_in_box(lambda x: {"loss": ((x - t) ** 2).sum()}, torch.full((1, 3, 4, 4), 0.5),
                                       steps=30, progress=False)
    torch.testing.assert_close(x, t.clamp(0, 1), atol=1e-5, rtol=0)
    assert history["time"] == sorted(history["time"]) and len(history["loss"]) == len(history["time"])
    assert history["evaluations"][0] == 1 and history["evaluations"] == sorted(history["evaluations"])
    assert history["loss"][-1] == pytest.approx(((t - t.clamp(0, 1)) ** 2).sum().item(), abs=1e-6)


def test_minimize_in_box_reaches_scipys_bounded_minimum_of_a_coupled_quadratic():
    """½ xᵀQx − bᵀx over the box, Q dense: many pixels end on a bound; scipy's L-BFGS-B (Byrd et al. 1995,
    an independent implementation, in double precision) gives the reference minimum."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    generator = torch.Generator().manual_seed(0)
    n = 3 * 8 * 8
    a = torch.randn(n, n, generator=generator, dtype=torch.float64) / n**0.5
    q = a @ a.T + 0.05 * torch.eye(n, dtype=torch.float64)
    b = 2 * torch.randn(n, generator=generator, dtype=torch.float64)
    reference = scipy_optimize.minimize(lambda z: (0.5 * z @ q.numpy() @ z - b.numpy() @ z, q.numpy() @ z - b.numpy()),
                                        np.full(n, 0.5), jac=True, method="L-BFGS-B", bounds=[(0, 1)] * n,
                                        options={"maxiter": 1000, "ftol": 0, "gtol": 1e-10})
    q32, b32 = q.float(), b.float()
    x, history = style.minimize_in_box(lambda x: {"loss": 0.5 * x.flatten() @ q32 @ x.flatten() - b32 @ x.flatten()},
                                       torch.full((1, 3, 8, 8), 0.5), steps=200, progress=False)
    at_bounds = ((reference.x < 1e-6) | (reference.x > 1 - 1e-6)).mean()
    assert 0.2 < at_bounds < 0.9  # the bounds matter, and some pixels are free
    assert history["loss"][-1] == pytest.approx(reference.fun, rel=1e-5)
    np.testing.assert_allclose(x.flatten().numpy(), reference.x, atol=2e-3)
    assert (x >= 0).all() and (x <= 1).all()


def test_two_loop_recursion_is_the_bfgs_inverse_hessian():
    """The two-loop recursion equals the BFGS update H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ from H₀ = γI."""
    generator = torch.Generator().manual_seed(1)
    n, pairs = 6, []
    for _ in range(3):
        s = torch.randn(n, generator=generator, dtype=torch.float64)
        y = s + 0.3 * torch.randn(n, generator=generator, dtype=torch.float64)
        pairs.append((s, y, 1 / float(s @ y)))
    s_new, y_new, rho_new = pairs[-1]
    h = torch.eye(n, dtype=torch.float64) * float(s_new @ y_new) / float(y_new @ y_new)
    for s, y, rho in pairs:
        left = torch.eye(n, dtype=torch.float64) - rho * torch.outer(s, y)
        h = left @ h @ left.T + rho * torch.outer(s, s)
    v = torch.randn(n, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(style._inverse_hessian_times(v, pairs), h @ v)


def test_smooth_noise_is_smooth_grey_and_seeded():
    x = style.smooth_noise(64, 64, seed=1)
    assert x.shape == (1, 3, 64, 64) and abs(x.mean().item() - 0.5) < 0.05 and x.std() < 0.15
    white = 0.5 + 0.1 * torch.randn(1, 3, 64, 64)
    assert core.total_variation(x) < 0.1 * core.total_variation(white)
    assert torch.equal(x, style.smooth_noise(64, 64, seed=1)) and not torch.equal(x, style.smooth_noise(64, 64))


# ----------------------------------------------------------------------------- statistics the network does not see

def test_color_histogram_distance_is_the_earth_movers_distance():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(3, 20, 30, generator=g) ** 2, torch.rand(3, 10, 12, generator=g)
    expected = np.mean([scipy.stats.wasserstein_distance(a[c].flatten().numpy(), b[c].flatten().numpy())
                        for c in range(3)])
    assert style.color_histogram_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert style.color_histogram_distance(a, a.flip(-1)) == 0.0  # the arrangement does not matter
    shifted = 0.2 + 0.5 * a
    assert style.color_histogram_distance(shifted, shifted + 0.1) == pytest.approx(0.1)  # closed form: the shift
    assert style.color_histogram_distance(torch.zeros(3, 4, 4), torch.ones(3, 4, 4)) == 1.0


def radial_average_loop(image, bins):
    """The radial average by loops over frequencies (numpy FFT, no vectorised binning)."""
    y = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).double().numpy()
    h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((y - y.mean()) * window)) ** 2 / (h * w)
    totals, counts = np.zeros(bins), np.zeros(bins)
    for i in range(h):
        for j in range(w):
            r = math.hypot(np.fft.fftfreq(h)[i], np.fft.fftfreq(w)[j])
            if 0 < r <= 0.5:
                k = min(int(r / (0.5 / bins)), bins - 1)
                totals[k] += power[i, j]
                counts[k] += 1
    return np.log10(totals / np.maximum(counts, 1) + 1e-12)


def test_radial_power_spectrum_matches_loops():
    image = torch.rand(3, 13, 17, generator=torch.Generator().manual_seed(3))  # no frequency on a ring's edge
    _, log_power = style.radial_power_spectrum(image, bins=7)
    # rtol: the luminance coefficients are float32 in the course's code
    np.testing.assert_allclose(log_power.numpy(), radial_average_loop(image, 7), rtol=1e-6, atol=0)


def test_radial_power_spectrum_peaks_at_a_grating_frequency():
    frequency = 0.2  # cycles per pixel
    grating = 0.5 + 0.4 * torch.sin(2 * math.pi * frequency * torch.arange(64.0)).expand(3, 64, 64)
    centres, log_power = style.radial_power_spectrum(grating, bins=10)
    assert abs(centres[log_power.argmax()].item() - frequency) <= 0.025
    x = torch.rand(3, 40, 40)
    assert style.spectrum_distance(x, x) == 0.0
    assert style.spectrum_distance(x, grating) == pytest.approx(style.spectrum_distance(grating, x))


# ----------------------------------------------------------------------------- texture quality, trained vs random

TEXTURES = ("gravel", "starry_night", "the_scream")


@pytest.fixture(scope="module")
def synthesized(net, random_net):
    out = {}
    for name in TEXTURES:
        target = assets.load_image(name, size=176)
        for label, reader in (("trained", net), ("random", random_net)):
            out[name, label] = style.synthesize_texture(target, reader, size=64, steps=(30, 15), progress=False)
    return out


@pytest.mark.parametrize("name", TEXTURES)
def test_trained_textures_match_unseen_statistics(synthesized, name):
    """Colour histogram and power spectrum: each much closer to the target than the start image is."""
    target, image = assets.load_image(name, size=176), synthesized[name, "trained"].image
    start = style.smooth_noise(64, 64)
    assert style.color_histogram_distance(image, target) < 0.5 * style.color_histogram_distance(start, target)
    assert style.spectrum_distance(image, target) < 0.25 * style.spectrum_distance(start, target)
    history = synthesized[name, "trained"].history
    assert history["loss"][-1] < 0.2 * history["loss"][0]


@pytest.fixture(scope="module")
def judge():
    """A trained network the synthesis never sees: EfficientNet-Lite2."""
    return style.style_net(models.pretrained("efficientnet_lite2"))


@pytest.mark.parametrize("name", TEXTURES)
def test_random_control_textures_are_further_as_an_unseen_network_judges(synthesized, judge, name):
    """The claim needs training: with random weights the same synthesis ends further from the texture, as
    EfficientNet-Lite2's Gram matrices judge (histogram and spectrum alone do not tell: random filters
    match second-order statistics too)."""
    target = assets.load_image(name, size=176)
    trained, random = synthesized[name, "trained"].image, synthesized[name, "random"].image
    assert style.gram_distance(judge, trained, target) < 0.6 * style.gram_distance(judge, random, target)


def test_gram_distance_is_the_style_loss_against_the_target(net):
    a, b = torch.rand(3, 32, 32), torch.rand(3, 40, 24) ** 2
    assert style.gram_distance(net, a, a) == 0.0
    targets = {layer: g[0] for layer, g in net.grams(b[None])[0].items()}
    assert style.gram_distance(net, a, b) == pytest.approx(style.style_loss(net.grams(a[None])[0], targets).item())


# ----------------------------------------------------------------------------- style transfer

@pytest.fixture(scope="module")
def photo():
    return assets.load_image("tubingen", size=32)


def test_style_transfer_history_stages_and_range(net, photo, painting):
    run = style.style_transfer(photo, painting, net, steps=(3, 2), tv_weight=1.0, progress=False)
    assert run.image.shape == (1, 3, 32, 43) and 0 <= run.image.min() and run.image.max() <= 1
    assert [tuple(s.shape[-2:]) for s in run.stages] == [(16, 22), (32, 43)]
    h = run.history
    assert set(h["size"]) == {16, 32} and h["time"] == sorted(h["time"]) and h["content"][0] == 0.0
    for i in range(len(h["loss"])):
        assert h["loss"][i] == pytest.approx(h["content"][i] + h["style"][i] + h["tv"][i], rel=1e-5)
    final = run.image
    assert h["tv"][-1] == pytest.approx(core.total_variation(final).item() / (32 * 43), rel=1e-4)


def test_blend_weights_select_and_mix_styles(net, photo, painting):
    scream = assets.load_image("the_scream", size=176)
    alone = style.style_transfer(photo, painting, net, steps=2, progress=False).image
    weighted = style.style_transfer(photo, [painting, scream], net, steps=2, blend_weights=[3, 0],
                                    progress=False).image
    torch.testing.assert_close(weighted, alone)
    with pytest.raises(ValueError, match="2 style images"):
        style.style_transfer(photo, [painting, scream], net, steps=1, blend_weights=[1])


def test_layer_weights_select_layers(net, photo, painting):
    """Weight 1 on the stem, 0 elsewhere: the same optimisation as a network whose only style layer is the stem."""
    stem_only = style.StyleNet(net.model, ("net.bn1.drop",), net.content_layer, net.upsample, pixel_gram=False)
    weights = [1.0] + [0.0] * (len(net.style_layers) + 1)
    weighted = style.style_transfer(photo, painting, net, steps=2, layer_weights=weights, progress=False)
    alone = style.style_transfer(photo, painting, stem_only, steps=2, progress=False)
    torch.testing.assert_close(weighted.image, alone.image)
    with pytest.raises(ValueError, match="one weight per style layer"):
        style.style_transfer(photo, painting, net, steps=1, layer_weights=[1.0])
    with pytest.raises(ValueError, match="layer weight"):
        style.style_transfer(photo, painting, net, steps=1, layer_weights=[-1.0] * len(weights))


def test_preserve_colors_keeps_luminance_and_takes_chrominance():
    g = torch.Generator().manual_seed(4)
    image, content = 0.4 + 0.2 * torch.rand(3, 8, 8, generator=g), 0.4 + 0.2 * torch.rand(3, 8, 8, generator=g)
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    out = style.preserve_colors(image, content)
    luminance, chroma = torch.einsum("ij,jhw->ihw", yiq, out), torch.einsum("ij,jhw->ihw", yiq, content)
    torch.testing.assert_close(luminance[0], torch.einsum("j,jhw->hw", yiq[0], image), atol=1e-5, rtol=0)
    torch.testing.assert_close(luminance[1:], chroma[1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(style.preserve_colors(image, image), image, atol=1e-5, rtol=0)


def test_reconstruct_content_lowers_the_content_loss(net, photo):
    run = style.reconstruct_content(photo, net, layer="net.blocks.1", steps=(8, 8), progress=False)
    assert run.history["loss"][-1] < 0.6 * run.history["loss"][0]


# ----------------------------------------------------------------------------- bad input gets a sentence

@pytest.mark.parametrize("channels, hint", [(1, "grayscale or RGBA"), (4, "grayscale or RGBA")])
def test_grayscale_and_rgba_images_are_refused(net, photo, painting, channels, hint):
    wrong = torch.rand(channels, 176, 176)
    with pytest.raises(ValueError, match=hint):
        style.style_transfer(photo, wrong, net, steps=1, progress=False)
    with pytest.raises(ValueError, match=hint):
        style.style_transfer(wrong[:, :32, :32], painting, net, steps=1, progress=False)
    with pytest.raises(ValueError, match=hint):
        style.synthesize_texture(wrong, net, size=16, steps=1, progress=False)


def test_style_image_smaller_than_the_receptive_field_is_refused(net, photo):
    small = assets.load_image("starry_night", size=100)
    with pytest.raises(ValueError, match=r"receptive field.*\(170 px"):
        style.style_transfer(photo, small, net, steps=1, progress=False)
    with pytest.raises(ValueError, match="receptive field"):
        style.synthesize_texture(small, net, size=16, steps=1, progress=False)
    with pytest.raises(ValueError, match="receptive field"):
        style.style_transfer(photo, assets.load_image("starry_night", size=256), net, steps=1, style_scale=0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"style_weight": -1.0}, "style_weight must be a number in \\[0, inf\\], got -1"),
    ({"content_weight": -0.5}, "content_weight"),
    ({"tv_weight": -2}, "tv_weight"),
    ({"blend_weights": [-1.0]}, "blend weight"),
    ({"blend_weights": [0.0]}, "all zero"),
    ({"style_scale": 0}, "style_scale"),
    ({"init": "zeros"}, "init must be"),
    ({"steps": 0}, "steps must be"),
    ({"steps": []}, "non-empty"),
])
def test_bad_arguments_get_a_sentence(net, photo, painting, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        style.style_transfer(photo, painting, net, progress=False, **kwargs)


def test_wrong_net_type_and_pixel_range(photo, painting):
    with pytest.raises(TypeError, match="StyleNet"):
        style.style_transfer(photo, painting, models.pretrained(), steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        style.style_transfer(photo * 255, painting, steps=1)


# ----------------------------------------------------------------------------- texture or shape

def test_coarse_categories_are_imagenet_classes_and_disjoint():
    labels = set(models.imagenet_labels())
    names = [n for members in style.COARSE_CATEGORIES.values() for n in members]
    assert set(names) <= labels and len(names) == len(set(names))
    assert set(style.SHAPE_PHOTOS) == set(style.COARSE_CATEGORIES)


def test_shape_bias_counts():
    decisions = [("cat", "cup", "cat"), ("cup", "cat", "cat"), ("cat", "rocket", "rocket"), ("rocket", "cat", "cup")]
    assert style.shape_bias(decisions) == {"images": 4, "shape": 1, "texture": 2, "other": 1, "shape_bias": 1 / 3}
    assert math.isnan(style.shape_bias([("cat", "cup", "rocket")])["shape_bias"])
    with pytest.raises(ValueError, match="two categories"):
        style.shape_bias([("cat", "cat", "cat")])


def test_photos_are_decided_by_the_trained_network_only():
    """The shapes of the experiment are recognised by the trained network; the random control fails."""
    categories = ["cat", "cup", "rocket", "building"]
    photos = {c: assets.load_image(style.SHAPE_PHOTOS[c], size=224) for c in categories}
    trained = models.pretrained()
    assert all(style.coarse_decision(trained, photos[c])[0] == c for c in categories)
    random = models.untrained("efficientnet_lite0")
    assert sum(style.coarse_decision(random, photos[c])[0] == c for c in categories) < len(categories)


def test_texture_patch_is_a_close_up_of_its_category():
    model = models.pretrained()
    patch = style.texture_patch(model, assets.load_image("coffee"), "cup")
    assert patch.shape[-2] == 224 and style.coarse_decision(model, patch)[0] == "cup"
    with pytest.raises(ValueError, match="Unknown category"):
        style.texture_patch(model, assets.load_image("coffee"), "teapot")
