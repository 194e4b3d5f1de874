"""Tests of utils.visualize against independent references: captum's Saliency
and GuidedBackprop, a guided-ReLU network built from a custom autograd
function, brute-force loops, NumPy's SVD, scikit-learn's PCA, t-SNE
trustworthiness and nearest neighbours."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from utils import models, visualize


class TinyColourNet(nn.Module):
    """A small 3-channel conv net with the course's [0, 1] input convention."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.normalize = models.Normalize(models.IMAGENET_MEAN, models.IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(self.normalize(x))))
        return self.fc(self.flatten(self.gap(self.relu2(self.conv2(x)))))


class NeuronScore(nn.Module):
    """Wraps a model so that its output is one channel's activation summed over positions."""

    def __init__(self, model, layer, channel):
        super().__init__()
        self.model, self.layer, self.channel = model, layer, channel

    def forward(self, x):
        store = {}
        handle = dict(self.model.named_modules())[self.layer].register_forward_hook(
            lambda m, i, o: store.setdefault("out", o))
        try:
            self.model(x)
        finally:
            handle.remove()
        return store["out"][:, self.channel].reshape(len(x), -1).sum(1, keepdim=True)


@pytest.fixture(scope="module")
def mnist_net():
    torch.manual_seed(0)
    return models.MnistCNN().eval()


@pytest.fixture(scope="module")
def colour_net():
    torch.manual_seed(1)
    return TinyColourNet().eval()


def _state(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [getattr(m, "inplace", None) for m in model.modules()])


# --------------------------------------------------------------------------- saliency


@pytest.mark.parametrize("net_name, shape", [("mnist_net", (4, 1, 28, 28)), ("colour_net", (3, 3, 20, 20))])
def test_saliency_matches_captum(net_name, shape, request):
    from captum.attr import Saliency

    model = request.getfixturevalue(net_name)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    target = [1, 0, 3, 2][: shape[0]]
    expected = Saliency(model).attribute(x.clone().requires_grad_(True), target=target, abs=True).amax(1)
    ours = visualize.saliency(model, x, target)
    assert ours.shape == (shape[0], shape[2], shape[3])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_saliency_is_gradient_of_logit_by_finite_differences(colour_net):
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    model = copy.deepcopy(colour_net).double()
    ours = visualize.saliency(model, x.clamp(0.05, 0.95), 2)
    eps, x = 1e-6, x.clamp(0.05, 0.95)
    grad = torch.zeros_like(x)
    with torch.no_grad():
        for idx in np.ndindex(*x.shape):
            up, down = x.clone(), x.clone()
            up[idx] += eps
            down[idx] -= eps
            grad[idx] = (model(up)[0, 2] - model(down)[0, 2]) / (2 * eps)
    torch.testing.assert_close(ours.double(), grad.abs().amax(1), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- guided backprop


@pytest.mark.parametrize("net_name, shape", [("mnist_net", (3, 1, 28, 28)), ("colour_net", (2, 3, 16, 16))])
def test_guided_backprop_matches_captum_for_a_class(net_name, shape, request):
    from captum.attr import GuidedBackprop

    model = request.getfixturevalue(net_name)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    expected = GuidedBackprop(model).attribute(x.clone(), target=2)
    ours = visualize.guided_backprop(model, x, 2)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("net_name, neuron", [("mnist_net", ("conv2", 5)), ("mnist_net", ("relu3", 7)),
                                              ("colour_net", ("relu2", 3))])
def test_guided_backprop_matches_captum_for_a_neuron(net_name, neuron, request):
    from captum.attr import GuidedBackprop

    model = request.getfixturevalue(net_name)
    channels = 1 if net_name == "mnist_net" else 3
    x = torch.rand(2, channels, 28, 28, generator=torch.Generator().manual_seed(2))
    expected = GuidedBackprop(NeuronScore(model, *neuron)).attribute(x.clone(), target=0)
    torch.testing.assert_close(visualize.guided_backprop(model, x, neuron), expected, rtol=1e-5, atol=1e-7)


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


def _replace_relus(module):
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, _GuidedReLU())
        else:
            _replace_relus(child)


def test_guided_backprop_on_resnet_with_reused_inplace_relus():
    torch.manual_seed(0)
    model = models._wrap(__import__("torchvision").models.resnet18(weights=None), models.IMAGENET_MEAN,
                         models.IMAGENET_STD, False, "resnet18").cpu()
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    reference_model = copy.deepcopy(model)
    _replace_relus(reference_model)
    xr = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(reference_model(xr)[0, 7], xr)[0]
    before = _state(model)
    ours = visualize.guided_backprop(model, x, 7)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-8)
    assert _state(model) == before
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    # No hook is left behind: a later plain gradient is the ordinary one.
    assert all(not m._forward_hooks for m in model.modules())


def test_guided_backprop_differs_from_plain_gradient(mnist_net):
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    guided = visualize.guided_backprop(mnist_net, x, 4)
    xr = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(mnist_net(xr)[:, 4].sum(), xr)[0]
    assert not torch.allclose(guided, plain)


# --------------------------------------------------------------------------- state and input are preserved


@pytest.mark.parametrize("call", [
    lambda m, x: visualize.saliency(m, x, 1),
    lambda m, x: visualize.guided_backprop(m, x, ("relu2", 0)),
    lambda m, x: visualize.class_visualization(m, 1, steps=2, blur_every=1, clip_percentile=5, jitter=2,
                                               progress=False),
    lambda m, x: visualize.deepdream(m, x[0], "relu2", steps=2, octaves=2, progress=False),
    lambda m, x: visualize.invert_features(m, "relu1", x[0], steps=2, progress=False),
    lambda m, x: visualize.layer_features(m, x, "fc1"),
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


# --------------------------------------------------------------------------- optimisations


def _score(model, image, target):
    with torch.no_grad():
        return model(image[None])[0, target].item()


@pytest.fixture(scope="module")
def trained_mnist_net():
    return models.mnist_cnn().cpu()


@pytest.mark.parametrize("kwargs", [{}, {"blur_every": 3, "blur_sigma": 0.5, "clip_percentile": 10, "jitter": 1}])
def test_class_visualization_raises_the_target_score(trained_mnist_net, kwargs):
    model = trained_mnist_net
    image = visualize.class_visualization(model, 6, steps=15, lr=0.05, progress=False, **kwargs)
    assert image.shape == (1, 28, 28)
    assert image.min() >= 0 and image.max() <= 1
    assert _score(model, image, 6) > _score(model, torch.zeros(1, 28, 28), 6) + 2.0
    with torch.no_grad():
        assert model(image[None]).argmax().item() == 6


def test_class_visualization_of_a_neuron_raises_its_activation(colour_net):
    start = 0.2 * torch.rand((1, 3, 24, 24), generator=torch.Generator().manual_seed(0))
    channel = int(visualize.layer_features(colour_net, start, "relu2")[0].sum((1, 2)).argmax())
    image = visualize.class_visualization(colour_net, ("relu2", channel), size=24, steps=10, noise=0.2,
                                          progress=False)
    assert image.shape == (3, 24, 24)
    act = visualize.layer_features(colour_net, torch.cat([image[None], start]), "relu2")[:, channel]
    assert act[0].sum() > 2 * act[1].sum() > 0


def test_class_visualization_of_several_targets_is_a_batch_of_single_runs(trained_mnist_net):
    batch = visualize.class_visualization(trained_mnist_net, [3, 8], steps=6, clip_percentile=10, blur_every=2,
                                          progress=False)
    assert batch.shape == (2, 1, 28, 28)
    for image, c in zip(batch, [3, 8], strict=True):
        single = visualize.class_visualization(trained_mnist_net, c, steps=6, clip_percentile=10, blur_every=2,
                                               progress=False)
        torch.testing.assert_close(image, single, rtol=1e-4, atol=1e-5)


def test_class_visualization_l2_penalty_shrinks_the_image(mnist_net):
    weak = visualize.class_visualization(mnist_net, 2, steps=15, l2=0.0, progress=False)
    strong = visualize.class_visualization(mnist_net, 2, steps=15, l2=50.0, progress=False)
    assert strong.norm() < weak.norm()


def test_deepdream_raises_sum_of_squared_activations(colour_net):
    image = torch.rand(3, 32, 40, generator=torch.Generator().manual_seed(6)) * 0.5 + 0.25
    dream = visualize.deepdream(colour_net, image, "conv2", steps=5, octaves=2, lr=0.02, progress=False)
    assert dream.shape == image.shape and dream.min() >= 0 and dream.max() <= 1

    def energy(img):
        return visualize.layer_features(colour_net, img, "conv2").pow(2).sum().item()

    assert energy(dream) > 1.2 * energy(image)


def test_tv_norm_matches_loops():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for beta in (1.0, 2.0, 3.0):
        total = 0.0
        for b, k, i, j in np.ndindex(2, 3, 4, 5):
            d = (x[b, k, i, j + 1] - x[b, k, i, j]) ** 2 + (x[b, k, i + 1, j] - x[b, k, i, j]) ** 2
            total += (d.item() + (0 if beta == 2 else 1e-8)) ** (beta / 2)
        assert visualize.tv_norm(x, beta).item() == pytest.approx(total, rel=1e-6)
    assert visualize.tv_norm(torch.ones(3, 7, 7)).item() == 0.0


def test_inversion_lowers_the_feature_loss(mnist_net):
    image = torch.zeros(1, 28, 28)
    image[:, 6:22, 12:16] = 1.0  # a "1"
    recon = visualize.invert_features(mnist_net, "relu2", image, steps=40, seed=3, progress=False)
    start = 0.4 + 0.2 * torch.rand((1, 1, 28, 28), generator=torch.Generator().manual_seed(3)).reshape(image.shape)

    def loss(img):
        f, f0 = (visualize.layer_features(mnist_net, z, "relu2") for z in (img, image))
        return ((f - f0).pow(2).sum() / f0.pow(2).sum()).item()

    assert recon.shape == image.shape and recon.min() >= 0 and recon.max() <= 1
    assert loss(recon) < 0.5 * loss(start)


# --------------------------------------------------------------------------- filters, embeddings, neighbours


def test_first_layer_filters_shape_and_scale(colour_net):
    filters = visualize.first_layer_filters(colour_net)
    weight = colour_net.conv1.weight.detach()
    assert filters.shape == weight.shape == (8, 3, 3, 3)
    assert torch.allclose(filters.amin(dim=(1, 2, 3)), torch.zeros(8))
    assert torch.allclose(filters.amax(dim=(1, 2, 3)), torch.ones(8))
    # An affine map per filter: the ranking of the weights is kept.
    n = 0
    w, f = weight[n].flatten(), filters[n].flatten()
    assert torch.allclose(f, (w - w.min()) / (w.max() - w.min()))
    alexnet = models.pretrained("alexnet")
    assert visualize.first_layer_filters(alexnet).shape == (64, 3, 11, 11)


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


def test_layer_features_penultimate_shape(mnist_net):
    assert visualize.layer_features(mnist_net, torch.rand(7, 1, 28, 28), "relu3", batch_size=3).shape == (7, 64)


def test_works_on_torchvision_layer_names():
    model = models.pretrained("alexnet")
    x = torch.rand(1, 3, 64, 64)
    assert visualize.saliency(model, x, ("net.features.10", 3)).shape == (1, 64, 64)
    assert visualize.layer_features(model, x, "net.features.2").shape == (1, 64, 7, 7)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("call, error, match", [
    (lambda m: visualize.saliency(m, torch.rand(1, 3, 28, 28), 0), ValueError, "3 channels"),
    (lambda m: visualize.saliency(m, torch.rand(28, 28), 0), ValueError, "shape"),
    (lambda m: visualize.saliency(m, torch.rand(1, 1, 28, 28) * 255, 0), ValueError, r"\[0, 1\]"),
    (lambda m: visualize.saliency(m, torch.zeros(1, 1, 28, 28, dtype=torch.uint8), 0), TypeError, "float"),
    (lambda m: visualize.saliency(m, torch.rand(1, 1, 28, 28), 10), ValueError, r"0\.\.9"),
    (lambda m: visualize.saliency(m, torch.rand(2, 1, 28, 28), [1, 2, 3]), ValueError, "one per image"),
    (lambda m: visualize.saliency(m, torch.rand(1, 1, 28, 28), "cat"), TypeError, "target"),
    (lambda m: visualize.saliency("net", torch.rand(1, 1, 28, 28), 0), TypeError, "nn.Module"),
    (lambda m: visualize.guided_backprop(m, torch.rand(1, 1, 28, 28), ("conv9", 0)), ValueError, "conv9"),
    (lambda m: visualize.deepdream(m, torch.rand(2, 1, 28, 28), "relu1"), ValueError, "one image"),
    (lambda m: visualize.deepdream(m, torch.rand(1, 28, 28), "relu1", octave_scale=1.0), ValueError,
     "octave_scale"),
    (lambda m: visualize.class_visualization(m, 0, steps=0), ValueError, "steps"),
    (lambda m: visualize.class_visualization(m, 0, clip_percentile=100), ValueError, "clip_percentile"),
    (lambda m: visualize.invert_features(m, "relu1", torch.rand(1, 28, 28), beta=0), ValueError, "beta"),
    (lambda m: visualize.embed_2d(np.zeros((10, 3)), "umap"), ValueError, "umap"),
    (lambda m: visualize.nearest_neighbors(np.zeros((4, 2)), [5]), ValueError, "queries"),
])
def test_bad_inputs_raise_a_sentence(mnist_net, call, error, match):
    with pytest.raises(error, match=match):
        call(mnist_net)


def test_guided_backprop_needs_relu_modules():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no nn.ReLU"):
        visualize.guided_backprop(model, torch.rand(1, 3, 8, 8), 0)
