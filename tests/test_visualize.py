"""Tests of utils.visualize against independent references: captum (Saliency, GuidedBackprop,
LayerGradCam, GuidedGradCam, NoiseTunnel, IntegratedGradients), guided-ReLU networks built from
custom autograd functions, finite differences, explicit parameterisations, brute-force loops,
scipy, NumPy's SVD, scikit-learn's PCA, t-SNE trustworthiness and nearest neighbours; and the
claims that need training, each failed by the random-weight control."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from utils import assets, core, models, visualize


class TinyColourNet(nn.Module):
    """A small 3-channel conv net with the course's [0, 1] input convention."""

    def __init__(self, num_classes: int = 5, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.normalize = models.Normalize(models.IMAGENET_MEAN, models.IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = act()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.relu2 = act()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(self.normalize(x))))
        return self.fc(self.flatten(self.gap(self.relu2(self.conv2(x)))))


class NeuronScore(nn.Module):
    """Wraps a model so that its output is one channel's activation, summed or at one position."""

    def __init__(self, model, layer, channel, position=None):
        super().__init__()
        self.model, self.layer, self.channel, self.position = model, layer, channel, position

    def forward(self, x):
        store = {}
        handle = dict(self.model.named_modules())[self.layer].register_forward_hook(
            lambda m, i, o: store.setdefault("out", o))
        try:
            self.model(x)
        finally:
            handle.remove()
        maps = store["out"][:, self.channel]
        if self.position is not None:
            return maps[:, self.position[0], self.position[1]][:, None]
        return maps.reshape(len(x), -1).sum(1, keepdim=True)


@pytest.fixture(scope="module")
def mnist_net():
    torch.manual_seed(0)
    return models.MnistCNN().eval()


@pytest.fixture(scope="module")
def colour_net():
    torch.manual_seed(1)
    return TinyColourNet().eval()


@pytest.fixture(scope="module")
def efficientnet():
    return models.pretrained()


@pytest.fixture(scope="module")
def control():
    return models.untrained()


def _state(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [getattr(m, "inplace", None) for m in model.modules()])


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- saliency, SmoothGrad, IG


@pytest.mark.parametrize("net_name, shape", [("mnist_net", (4, 1, 28, 28)), ("colour_net", (3, 3, 20, 20))])
def test_saliency_matches_captum(net_name, shape, request):
    from captum.attr import Saliency

    model = request.getfixturevalue(net_name)
    x = _rand(*shape)
    target = [1, 0, 3, 2][: shape[0]]
    expected = Saliency(model).attribute(x.clone().requires_grad_(True), target=target, abs=True).amax(1)
    ours = visualize.saliency(model, x, target)
    assert ours.shape == (shape[0], shape[2], shape[3])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_saliency_is_gradient_of_logit_by_finite_differences(colour_net):
    x = _rand(1, 3, 8, 8, seed=3).double().clamp(0.05, 0.95)
    model = copy.deepcopy(colour_net).double()
    ours = visualize.saliency(model, x, 2)
    eps = 1e-6
    grad = torch.zeros_like(x)
    with torch.no_grad():
        for idx in np.ndindex(*x.shape):
            up, down = x.clone(), x.clone()
            up[idx] += eps
            down[idx] -= eps
            grad[idx] = (model(up)[0, 2] - model(down)[0, 2]) / (2 * eps)
    torch.testing.assert_close(ours.double(), grad.abs().amax(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("target", [2, [0, 4]])
def test_smooth_grad_matches_captum_noise_tunnel_with_a_fixed_seed(colour_net, target):
    from captum.attr import NoiseTunnel, Saliency

    x = _rand(2, 3, 16, 16, seed=4)
    torch.manual_seed(11)
    expected = NoiseTunnel(Saliency(colour_net)).attribute(x.clone(), nt_type="smoothgrad", nt_samples=6,
                                                           stdevs=0.2, target=target).amax(1)
    ours = visualize.smooth_grad(colour_net, x, target, n_samples=6, sigma=0.2, seed=11, batch_size=5)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_smooth_grad_with_zero_noise_is_saliency(colour_net):
    x = _rand(2, 3, 16, 16, seed=5)
    torch.testing.assert_close(visualize.smooth_grad(colour_net, x, 1, n_samples=3, sigma=0.0),
                               visualize.saliency(colour_net, x, 1))


@pytest.mark.parametrize("baseline", ["mean image", "black", "an image"])
def test_integrated_gradients_match_captum(colour_net, baseline):
    from captum.attr import IntegratedGradients

    x = _rand(2, 3, 12, 12, seed=6)
    image = _rand(1, 3, 12, 12, seed=7)
    ours_baseline, reference = {
        "mean image": (None, torch.tensor(models.IMAGENET_MEAN).reshape(1, 3, 1, 1)),
        "black": (0.0, torch.zeros(1, 3, 1, 1)),
        "an image": (image, image),
    }[baseline]
    expected = IntegratedGradients(colour_net).attribute(x, baselines=reference.expand_as(x).contiguous(),
                                                         target=[3, 1], n_steps=10, method="riemann_right")
    ours = visualize.integrated_gradients(colour_net, x, [3, 1], baseline=ours_baseline, steps=10, batch_size=7)
    torch.testing.assert_close(ours, expected.float(), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_are_complete(colour_net):
    """The attributions add up to S(x) - S(baseline) (Sundararajan et al.'s completeness)."""
    model = copy.deepcopy(colour_net).double()
    x = _rand(1, 3, 10, 10, seed=8).double()
    attributions = visualize.integrated_gradients(model, x, 4, baseline=0.2, steps=400)
    with torch.no_grad():
        change = model(x)[0, 4] - model(torch.full_like(x, 0.2))[0, 4]
    assert attributions.sum().item() == pytest.approx(change.item(), rel=1e-2, abs=1e-4)


# --------------------------------------------------------------------------- guided backprop


@pytest.mark.parametrize("net_name, shape", [("mnist_net", (3, 1, 28, 28)), ("colour_net", (2, 3, 16, 16))])
def test_guided_backprop_matches_captum_for_a_class(net_name, shape, request):
    from captum.attr import GuidedBackprop

    model = request.getfixturevalue(net_name)
    x = _rand(*shape, seed=1)
    expected = GuidedBackprop(model).attribute(x.clone(), target=2)
    ours = visualize.guided_backprop(model, x, 2)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("net_name, neuron", [("mnist_net", ("conv2", 5)), ("mnist_net", ("relu3", 7)),
                                              ("colour_net", ("relu2", 3)), ("mnist_net", ("relu2", 4, (6, 9))),
                                              ("colour_net", ("relu2", 3, (2, 11)))])
def test_guided_backprop_matches_captum_for_a_channel_and_a_neuron(net_name, neuron, request):
    from captum.attr import GuidedBackprop

    model = request.getfixturevalue(net_name)
    channels = 1 if net_name == "mnist_net" else 3
    x = _rand(2, channels, 28, 28, seed=2)
    expected = GuidedBackprop(NeuronScore(model, *neuron)).attribute(x.clone(), target=0)
    torch.testing.assert_close(visualize.guided_backprop(model, x, neuron), expected, rtol=1e-5, atol=1e-7)


def test_a_neuron_is_local_and_a_channel_is_not(mnist_net):
    """One unit of conv2 sees a 6x6 patch of the digit; the channel sums units everywhere."""
    x = _rand(1, 1, 28, 28, seed=3)
    field = core.receptive_field(mnist_net, "relu2", channels=1, size=28)
    unit = visualize.guided_backprop(mnist_net, x, ("relu2", 4, (7, 7)))[0, 0]
    rows, cols = unit.nonzero(as_tuple=True)
    assert len(rows) and rows.max() - rows.min() < field["size"] and cols.max() - cols.min() < field["size"]
    channel = visualize.input_gradient(mnist_net, x, ("relu2", 4))[0, 0]
    assert (channel != 0).sum() > 10 * (unit != 0).sum()


class _GuidedReLU6Function(torch.autograd.Function):
    """Guided backward of ReLU6, written out: 1[0 < x < 6] * max(grad, 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * ((x > 0) & (x < 6))


class _GuidedReLU6(nn.Module):
    def forward(self, x):
        return _GuidedReLU6Function.apply(x)


class _GuidedReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


class _GuidedReLU(nn.Module):
    def forward(self, x):
        return _GuidedReLUFunction.apply(x)


def _replace_activations(module):
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU6):
            setattr(module, name, _GuidedReLU6())
        elif isinstance(child, nn.ReLU):
            setattr(module, name, _GuidedReLU())
        else:
            _replace_activations(child)


@pytest.mark.parametrize("target", [7, ("net.blocks.4", 11), ("net.blocks.3", 5, (2, 3))])
def test_guided_backprop_through_efficientnet_relu6(efficientnet, target):
    """timm's BatchNormAct2d holds an in-place ReLU6; the guided rule must pass 1[0 < x < 6] max(R, 0)."""
    x = _rand(1, 3, 64, 64, seed=4)
    reference = copy.deepcopy(efficientnet)
    _replace_activations(reference)
    xr = x.clone().requires_grad_(True)
    score = (reference(xr)[0, target] if isinstance(target, int) else
             NeuronScore(reference, *target)(xr)[0, 0])
    expected = torch.autograd.grad(score, xr)[0]
    before = _state(efficientnet)
    ours = visualize.guided_backprop(efficientnet, x, target)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-7)
    assert _state(efficientnet) == before
    assert all(m.inplace for m in efficientnet.modules() if isinstance(m, nn.ReLU6))
    assert all(not m._forward_hooks for m in efficientnet.modules())
    assert not torch.allclose(ours, visualize.input_gradient(efficientnet, x, target))


def test_guided_backprop_on_resnet_with_reused_inplace_relus():
    model = models.untrained("resnet18").cpu()
    x = _rand(1, 3, 48, 48, seed=4)
    reference_model = copy.deepcopy(model)
    _replace_activations(reference_model)
    xr = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(reference_model(xr)[0, 7], xr)[0]
    before = _state(model)
    ours = visualize.guided_backprop(model, x, 7)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-8)
    assert _state(model) == before
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert all(not m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- Grad-CAM


@pytest.mark.parametrize("net_name, layer, shape", [("mnist_net", "relu2", (3, 1, 28, 28)),
                                                     ("colour_net", "relu2", (2, 3, 16, 16)),
                                                     ("colour_net", "conv1", (2, 3, 16, 20))])
def test_grad_cam_matches_captum_layer_grad_cam_upsampled(net_name, layer, shape, request):
    from captum.attr import LayerAttribution, LayerGradCam

    model = request.getfixturevalue(net_name)
    x = _rand(*shape, seed=5)
    module = dict(model.named_modules())[layer]
    cam = LayerGradCam(model, module).attribute(x.clone(), target=2, relu_attributions=True)
    expected = LayerAttribution.interpolate(cam, tuple(shape[2:]), interpolate_mode="bilinear")[:, 0]
    ours = visualize.grad_cam(model, x, 2, layer)
    assert ours.shape == (shape[0], *shape[2:]) and (ours >= 0).all()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_guided_grad_cam_matches_captum(colour_net):
    from captum.attr import GuidedGradCam

    x = _rand(2, 3, 16, 16, seed=6)
    expected = GuidedGradCam(colour_net, colour_net.relu2).attribute(x.clone(), target=[1, 3],
                                                                     interpolate_mode="bilinear")
    torch.testing.assert_close(visualize.guided_grad_cam(colour_net, x, [1, 3], "relu2"), expected,
                               rtol=1e-5, atol=1e-7)


def test_square_is_the_centred_square_resized():
    image = torch.zeros(3, 20, 40)
    image[:, :, 10:30] = 1.0  # the centred 20 x 20 square is white, the sides black
    torch.testing.assert_close(visualize.square(image, 10), torch.ones(3, 10, 10))


def test_mosaic_and_mass_share():
    images = [torch.full((3, 20, 30), v) for v in (0.1, 0.4, 0.7, 1.0)]
    grid, masks = visualize.mosaic(images, 8)
    for k, value in enumerate((0.1, 0.4, 0.7, 1.0)):
        assert torch.allclose(grid[0][:, masks[k]], torch.tensor(value))
    maps = grid[:, 0].expand(4, -1, -1)
    share = visualize.mass_share(maps, masks)
    torch.testing.assert_close(share, torch.tensor([0.1, 0.4, 0.7, 1.0]) / 2.2)


@pytest.fixture(scope="module")
def mosaic_of_photos(efficientnet):
    photos = [assets.load_image(name, size=112) for name in ("chelsea", "coffee", "flower", "rocket")]
    grid, masks = visualize.mosaic(photos, 112)
    classes = [int(core.predict(efficientnet, assets.resize(p, (112, 112))[None])) for p in photos]
    return grid, masks, classes


def test_grad_cam_finds_each_class_in_its_quadrant_only_when_trained(efficientnet, control, mosaic_of_photos):
    grid, masks, classes = mosaic_of_photos
    trained = torch.stack([visualize.mass_share(visualize.grad_cam(efficientnet, grid, c, "net.bn2"), m[None])[0]
                           for c, m in zip(classes, masks, strict=True)])
    random = torch.stack([visualize.mass_share(visualize.grad_cam(control, grid, c, "net.bn2"), m[None])[0]
                          for c, m in zip(classes, masks, strict=True)])
    assert (trained > 0.5).all(), trained
    assert not (random > 0.5).all(), random


# --------------------------------------------------------------------------- class models


def test_fourier_precondition_is_the_step_of_the_fourier_parameterisation():
    """Ascent on theta with z = P theta moves z by P P^T grad: build P explicitly and compare."""
    g = torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    covariance = torch.tensor([[1.0, 0.6, 0.3], [0.6, 1.0, 0.5], [0.3, 0.5, 1.0]], dtype=torch.float64)
    eigvals, eigvecs = torch.linalg.eigh(covariance)
    colour_sqrt = eigvecs @ torch.diag(eigvals.sqrt()) @ eigvecs.T
    fy, fx = torch.fft.fftfreq(10, dtype=torch.float64)[:, None], torch.fft.rfftfreq(12, dtype=torch.float64)[None]
    amplitude = torch.sqrt(fx**2 + fy**2).clamp_min(1 / 12) ** -1.0  # Distill's 1/|f| scaling, d = 2

    def P(theta):
        spatial = torch.fft.irfft2(torch.fft.rfft2(theta) * amplitude, s=(10, 12))
        return torch.einsum("kl,blhw->bkhw", colour_sqrt, spatial)

    theta = torch.zeros_like(g, requires_grad=True)
    (step_theta,) = torch.autograd.grad((P(theta) * g).sum(), theta)  # P^T g
    expected = P(step_theta)
    torch.testing.assert_close(visualize.fourier_precondition(g, covariance, decay=2.0), expected)


def test_clip_small_zeroes_the_stated_share_of_pixels():
    z = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    grad = torch.randn_like(z)
    clipped = visualize.clip_small(z, grad, norm_percentile=30)
    zero = (clipped == 0).all(1)[0]
    norms = z.norm(dim=1)[0]
    assert zero.sum() == 30 and norms[zero].max() < norms[~zero].min()
    both = visualize.clip_small(z, grad, norm_percentile=30, contribution_percentile=30)
    assert (both == 0).all(1).sum() >= 30 and torch.equal(visualize.clip_small(z, grad), z)


def _score(model, image, target):
    with torch.no_grad():
        return model(image[None])[0, target].item()


@pytest.fixture(scope="module")
def trained_mnist_net():
    return models.mnist_cnn().cpu()


@pytest.mark.parametrize("kwargs", [{}, {"blur_every": 3, "blur_sigma": 0.5, "clip_norm": 10, "jitter": 1},
                                    {"fourier": True, "jitter": 2, "clip_contribution": 10}])
def test_class_visualization_raises_the_target_score(trained_mnist_net, kwargs):
    model = trained_mnist_net
    image = visualize.class_visualization(model, 6, steps=15, lr=0.05, progress=False, **kwargs)
    assert image.shape == (1, 28, 28)
    assert image.min() >= 0 and image.max() <= 1
    mean_image = models.Normalize(models.MNIST_MEAN, models.MNIST_STD).mean.expand(1, 28, 28)
    assert _score(model, image, 6) > _score(model, mean_image, 6) + 2.0
    with torch.no_grad():
        assert model(image[None]).argmax().item() == 6


def test_class_visualization_starts_from_and_is_pulled_to_the_mean_image(colour_net):
    """Zero and the L2 penalty live in the normalised image: the start is the mean image, not black."""
    mean_image = models.Normalize(models.IMAGENET_MEAN, models.IMAGENET_STD).mean.expand(3, 8, 8)
    start = visualize.class_visualization(colour_net, 1, size=8, steps=1, lr=1e-6, progress=False)
    torch.testing.assert_close(start, mean_image, atol=1e-5, rtol=0)
    weak = visualize.class_visualization(colour_net, 1, size=8, steps=30, l2=0.0, progress=False)
    strong = visualize.class_visualization(colour_net, 1, size=8, steps=30, l2=50.0, progress=False)
    assert (strong - mean_image).norm() < 0.5 * (weak - mean_image).norm()


def test_class_visualization_of_a_channel_raises_its_activation(colour_net):
    start = 0.2 * _rand(1, 3, 24, 24)
    channel = int(core.layer_features(colour_net, start, "relu2")[0].sum((1, 2)).argmax())
    image = visualize.class_visualization(colour_net, ("relu2", channel), size=24, steps=10, noise=0.2,
                                          progress=False)
    assert image.shape == (3, 24, 24)
    act = core.layer_features(colour_net, torch.cat([image[None], start]), "relu2")[:, channel]
    assert act[0].sum() > 2 * act[1].sum() > 0


def test_class_visualization_of_several_targets_is_a_batch_of_single_runs(trained_mnist_net):
    kwargs = {"steps": 6, "clip_norm": 10, "blur_every": 2, "progress": False}
    batch = visualize.class_visualization(trained_mnist_net, [3, 8], **kwargs)
    assert batch.shape == (2, 1, 28, 28)
    for image, c in zip(batch, [3, 8], strict=True):
        torch.testing.assert_close(image, visualize.class_visualization(trained_mnist_net, c, **kwargs),
                                   rtol=1e-4, atol=1e-5)


def test_class_visualization_takes_a_zero_dimensional_tensor_target(mnist_net):
    image = visualize.class_visualization(mnist_net, torch.tensor(4), steps=2, progress=False)
    assert image.shape == (1, 28, 28)


def test_crop_recognition_counts_crops_classified_as_the_target():
    always_two = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Flatten(), nn.LazyLinear(4))
    always_two(torch.rand(1, 3, 8, 8))
    with torch.no_grad():
        always_two[2].weight.zero_()
        always_two[2].bias.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))
    share = visualize.crop_recognition(always_two, _rand(2, 3, 8, 8), [2, 1], crops=3)
    assert share.tolist() == [1.0, 0.0]


# --------------------------------------------------------------------------- DeepDream and inversion


def test_deepdream_raises_sum_of_squared_activations(colour_net):
    image = _rand(3, 32, 40, seed=6) * 0.5 + 0.25
    dream = visualize.deepdream(colour_net, image, "conv2", steps=5, octaves=2, lr=0.02, progress=False)
    assert dream.shape == image.shape and dream.min() >= 0 and dream.max() <= 1

    def energy(img):
        return core.layer_features(colour_net, img, "conv2").pow(2).sum().item()

    assert energy(dream) > 1.2 * energy(image)


def test_tv_prior_has_one_home():
    assert not hasattr(visualize, "tv_norm")


def test_inversion_lowers_the_feature_loss(mnist_net):
    image = torch.zeros(1, 28, 28)
    image[:, 6:22, 12:16] = 1.0  # a "1"
    recon = visualize.invert_features(mnist_net, image, "relu2", steps=40, seed=3, progress=False)
    mean_image = models.Normalize(models.MNIST_MEAN, models.MNIST_STD).mean.expand(1, 28, 28)

    def loss(img):
        f, f0 = (core.layer_features(mnist_net, z, "relu2") for z in (img, image))
        return ((f - f0).pow(2).sum() / f0.pow(2).sum()).item()

    assert recon.shape == image.shape and recon.min() >= 0 and recon.max() <= 1
    assert loss(recon) < 0.5 * loss(mean_image)


def test_layout_similarity_sees_edges_not_brightness():
    square = torch.zeros(1, 3, 32, 32)
    square[..., 8:24, 8:24] = 0.8
    assert visualize.layout_similarity(square, 0.5 * square + 0.2).item() == pytest.approx(1.0, abs=1e-5)
    assert visualize.layout_similarity(square, square.roll(10, dims=3)).item() < 0.3


# --------------------------------------------------------------------------- filters


def test_first_layer_filters_are_the_stem_rescaled(efficientnet):
    filters = visualize.first_layer_filters(efficientnet)
    weight = efficientnet.net.conv_stem.weight.detach()
    assert filters.shape == weight.shape == (32, 3, 3, 3)
    w, f = weight[5].flatten(), filters[5].flatten()
    torch.testing.assert_close(f, (w - w.min()) / (w.max() - w.min()))


def test_ica_recovers_sparse_sources_mixed_by_a_known_matrix():
    """Independent Laplacian sources, mixed linearly: the learned filters undo the mixing."""
    rng = np.random.default_rng(0)
    sources = rng.laplace(size=(5000, 4))
    mixing = rng.normal(size=(4, 4))
    filters = visualize.ica_filters(sources @ mixing.T, n_components=4).reshape(4, 4)
    product = filters @ mixing  # a scaled permutation when W inverts A
    product = np.abs(product) / np.abs(product).max(axis=1, keepdims=True)
    assert sorted(product.argmax(axis=1)) == [0, 1, 2, 3]
    assert (np.sort(product, axis=1)[:, -2] < 0.1).all()


def test_gabor_bank_and_similarity():
    bank = visualize.gabor_bank(size=12)
    assert bank.shape == (4 * 3 * 8 * 2, 12, 12)
    torch.testing.assert_close(bank.sum((1, 2)), torch.zeros(len(bank)), atol=1e-5, rtol=0)
    torch.testing.assert_close(bank.flatten(1).norm(dim=1), torch.ones(len(bank)))
    shifted = torch.zeros(1, 12, 12)
    shifted[0, 2:, 3:] = bank[40, :-2, :-3]
    assert visualize.gabor_similarity(shifted, bank).item() > 0.9
    noise = torch.randn(20, 12, 12, generator=torch.Generator().manual_seed(0))
    assert visualize.gabor_similarity(noise, bank).max() < 0.6


def test_ica_filters_of_the_photos_are_gabor_like_and_random_filters_are_not():
    patches = visualize.image_patches([assets.load_image(n, 200) for n in assets.PHOTOS], size=12, n=4000)
    filters = visualize.ica_filters(patches, n_components=24)
    bank = visualize.gabor_bank(size=12)
    noise = np.random.default_rng(0).normal(size=(24, 12, 12))
    assert visualize.gabor_similarity(filters, bank).median() > visualize.gabor_similarity(noise, bank).max()


def test_response_kurtosis_matches_scipy_on_loops():
    from scipy.stats import kurtosis

    filters = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    images = _rand(2, 3, 5, 6, seed=1)
    responses = [[(filters[n] * images[b, :, i:i + 2, j:j + 2]).sum().item()
                  for b in range(2) for i in range(4) for j in range(5)] for n in range(2)]
    torch.testing.assert_close(visualize.response_kurtosis(filters, images),
                               torch.tensor(kurtosis(np.array(responses), axis=1), dtype=torch.float32))


def test_response_kurtosis_of_a_zero_filter_is_nan():
    filters = torch.zeros(2, 1, 2, 2)
    filters[1, 0, 0] = torch.tensor([1.0, -1.0])
    kurtosis = visualize.response_kurtosis(filters, _rand(1, 1, 6, 6))
    assert kurtosis[0].isnan() and not kurtosis[1].isnan()


def test_trained_first_layer_gives_sparse_responses_and_random_does_not(efficientnet, control):
    images = torch.stack([assets.resize(assets.load_image(n, 128)[:, :, :128], (128, 128)) for n in assets.PHOTOS])
    trained = visualize.response_kurtosis(efficientnet.net.conv_stem.weight.detach(), images)
    random = visualize.response_kurtosis(control.net.conv_stem.weight.detach(), images)
    assert (trained > 3).float().mean() > 0.2 and (random > 3).float().mean() < 0.05


# --------------------------------------------------------------------------- embeddings and neighbours


def test_random_crops_come_from_their_source():
    images = [torch.full((3, 30, 40), 0.2), torch.full((3, 50, 30), 0.9)]
    crops, source = visualize.random_crops(images, 4, 16, seed=2)
    assert crops.shape == (8, 3, 16, 16) and source.tolist() == [0] * 4 + [1] * 4
    torch.testing.assert_close(crops.mean((1, 2, 3)), torch.tensor([0.2] * 4 + [0.9] * 4))


def test_embed_2d_pca_matches_svd_and_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6)) * np.array([5, 3, 1, 0.5, 0.2, 0.1])
    ours = visualize.embed_2d(torch.from_numpy(X), "pca")
    sk = PCA(n_components=2).fit_transform(X)
    for axis in range(2):  # equal up to the sign of each axis
        sign = np.sign(ours[:, axis] @ sk[:, axis])
        np.testing.assert_allclose(ours[:, axis], sign * sk[:, axis], atol=1e-9)
    _, _, Vt = np.linalg.svd(X - X.mean(0))
    np.testing.assert_allclose(np.abs(ours), np.abs((X - X.mean(0)) @ Vt[:2].T), atol=1e-9)
    assert (ours[np.abs(ours).argmax(0), [0, 1]] > 0).all()


def test_embed_2d_pca_with_more_dimensions_than_rows_matches_sklearn():
    from sklearn.decomposition import PCA

    X = np.random.default_rng(4).normal(size=(12, 300)) * np.linspace(3, 0.1, 300)
    ours = visualize.embed_2d(X, "pca")
    sk = PCA(n_components=2).fit_transform(X)
    np.testing.assert_allclose(np.abs(ours), np.abs(sk), atol=1e-8)


def test_embed_2d_tsne_keeps_clusters():
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 10)) * 8
    X = np.concatenate([c + rng.normal(size=(30, 10)) for c in centres])
    Y = visualize.embed_2d(X, "tsne", seed=0)
    assert Y.shape == (90, 2)
    assert trustworthiness(X, Y, n_neighbors=5) > 0.9
    np.testing.assert_allclose(Y, visualize.embed_2d(X, "tsne", seed=0))


def test_nearest_neighbors_matches_sklearn():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(2).normal(size=(40, 5))
    ours = visualize.nearest_neighbors(X, [0, 7, 39], k=4)
    _, idx = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(X[[0, 7, 39]])
    np.testing.assert_array_equal(ours, idx[:, 1:])


def test_label_agreement_by_brute_force():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    expected = np.mean([[y[n] == y[q] for n in np.argsort(((X - X[q]) ** 2).sum(1))[1:4]] for q in range(30)])
    assert visualize.label_agreement(X, y, k=3) == pytest.approx(expected)


# --------------------------------------------------------------------------- state, input and bad inputs


@pytest.mark.parametrize("call", [
    lambda m, x: visualize.saliency(m, x, 1),
    lambda m, x: visualize.smooth_grad(m, x, 1, n_samples=2),
    lambda m, x: visualize.integrated_gradients(m, x, 1, steps=3),
    lambda m, x: visualize.guided_backprop(m, x, ("relu2", 0)),
    lambda m, x: visualize.grad_cam(m, x, 1, "relu2"),
    lambda m, x: visualize.class_visualization(m, 1, steps=2, blur_every=1, clip_norm=5, jitter=2, fourier=True,
                                               progress=False),
    lambda m, x: visualize.deepdream(m, x[0], "relu2", steps=2, octaves=2, progress=False),
    lambda m, x: visualize.invert_features(m, x[0], "relu1", steps=2, progress=False),
])
def test_model_state_and_input_restored(call):
    torch.manual_seed(0)
    model = models.MnistCNN()
    model.train()
    model.conv1.eval()
    model.fc2.weight.requires_grad_(False)
    model.relu1.inplace = True
    before = _state(model)
    x = torch.rand(2, 1, 28, 28)
    x_copy = x.clone()
    call(model, x)
    assert _state(model) == before
    assert torch.equal(x, x_copy)
    assert all(p.grad is None for p in model.parameters())


def test_state_restored_when_an_error_is_raised(mnist_net):
    before = _state(mnist_net)
    with pytest.raises(ValueError, match="target 99 is out of range"):
        visualize.guided_backprop(mnist_net, torch.rand(1, 1, 28, 28), ("conv2", 99))
    assert _state(mnist_net) == before
    assert all(not m._forward_hooks for m in mnist_net.modules())


@pytest.mark.parametrize("call, error, match", [
    (lambda m: visualize.saliency(m, torch.rand(1, 3, 28, 28), 0), ValueError, "3 channels"),
    (lambda m: visualize.saliency(m, torch.rand(28, 28), 0), ValueError, "shape"),
    (lambda m: visualize.saliency(m, torch.rand(1, 1, 28, 28) * 255, 0), ValueError, r"\[0, 1\]"),
    (lambda m: visualize.saliency(m, torch.full((1, 1, 28, 28), float("nan")), 0), ValueError, "NaN"),
    (lambda m: visualize.saliency(m, torch.zeros(1, 1, 28, 28, dtype=torch.uint8), 0), TypeError, "float"),
    (lambda m: visualize.saliency(m, torch.rand(1, 1, 28, 28), 10), ValueError, r"0\.\.9"),
    (lambda m: visualize.saliency(m, torch.rand(2, 1, 28, 28), [1, 2, 3]), ValueError, "one per image"),
    (lambda m: visualize.saliency(m, torch.rand(1, 1, 28, 28), "cat"), TypeError, "target"),
    (lambda m: visualize.saliency("net", torch.rand(1, 1, 28, 28), 0), TypeError, "nn.Module"),
    (lambda m: visualize.guided_backprop(m, torch.rand(1, 1, 28, 28), ("conv9", 0)), ValueError, "conv9"),
    (lambda m: visualize.guided_backprop(m, torch.rand(1, 1, 28, 28), ("relu2", 0, (20, 3))), ValueError,
     "outside the 14×14 map"),
    (lambda m: visualize.guided_backprop(m, torch.rand(1, 1, 28, 28), ("relu2", 0, 5)), TypeError, "row, col"),
    (lambda m: visualize.grad_cam(m, torch.rand(1, 1, 28, 28), 0, "layer9"), ValueError, "layer9"),
    (lambda m: visualize.grad_cam(m, torch.rand(1, 1, 28, 28), 0, "fc1"), ValueError, "maps"),
    (lambda m: visualize.grad_cam(m, torch.rand(1, 1, 28, 28), ("relu1", 0), "conv2"), ValueError, "before"),
    (lambda m: visualize.smooth_grad(m, torch.rand(1, 1, 28, 28), 0, sigma=-1), ValueError, "sigma"),
    (lambda m: visualize.integrated_gradients(m, torch.rand(1, 1, 28, 28), 0, baseline=torch.rand(1, 1, 8, 8)),
     ValueError, "baseline"),
    (lambda m: visualize.deepdream(m, torch.rand(2, 1, 28, 28), "relu1"), ValueError, "one image"),
    (lambda m: visualize.deepdream(m, torch.rand(1, 28, 28), "relu1", octave_scale=1.0), ValueError,
     "octave_scale"),
    (lambda m: visualize.invert_features(m, torch.rand(3, 1, 28, 28), "relu1"), ValueError, "one image"),
    (lambda m: visualize.class_visualization(m, 0, steps=0), ValueError, "steps"),
    (lambda m: visualize.class_visualization(m, 0, clip_norm=100), ValueError, "norm_percentile"),
    (lambda m: visualize.class_visualization(m, 12), ValueError, r"Class target 12 is out of range"),
    (lambda m: visualize.invert_features(m, torch.rand(1, 28, 28), "relu1", beta=0), ValueError, "beta"),
    (lambda m: visualize.embed_2d(np.zeros((10, 3)), "umap"), ValueError, "umap"),
    (lambda m: visualize.nearest_neighbors(np.zeros((4, 2)), [5]), ValueError, "queries"),
])
def test_bad_inputs_raise_a_sentence(mnist_net, call, error, match):
    with pytest.raises(error, match=match):
        call(mnist_net)


def test_efficientnet_bad_inputs_raise_a_sentence(efficientnet):
    x = _rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"Class target 1000 is out of range: use 0\.\.999"):
        visualize.saliency(efficientnet, x, 1000)
    with pytest.raises(ValueError, match=r"'net.blocks.4' channel target 112 is out of range"):
        visualize.guided_backprop(efficientnet, x, ("net.blocks.4", 112))
    with pytest.raises(ValueError, match="net.block.4"):
        visualize.grad_cam(efficientnet, x, 3, "net.block.4")


def test_guided_backprop_needs_relu_modules():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no nn.ReLU"):
        visualize.guided_backprop(model, torch.rand(1, 3, 8, 8), 0)


# --------------------------------------------------------------------------- Try it


def test_widgets_draw_their_static_figure_on_the_imagenet_network(efficientnet, monkeypatch):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr("utils.widgets.display", lambda fig: shown.append(fig))
    photos = torch.stack([assets.resize(assets.load_image(n, 64)[:, :, :64], (64, 64)) for n in ("chelsea", "coffee")])
    panel = visualize.saliency_widget(efficientnet, photos, names=["chelsea", "coffee"])
    assert "try-it" in panel._dom_classes
    panel = visualize.class_model_widget(efficientnet, {"goldfish": 1}, size=32, steps=2)
    assert "try-it" in panel._dom_classes and len(shown) == 2
    plt.close("all")
