"""utils.core: checks, hooks, modes, the training loop, cached models, receptive fields and
the total-variation prior, against brute force and closed forms."""

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from utils import config, core, models

# --------------------------------------------------------------------------- checks


@pytest.mark.parametrize("x, kwargs, error, match", [
    ([[0.0]], {}, TypeError, "must be a torch.Tensor image"),
    (torch.rand(8, 8), {}, ValueError, r"shape \(C, H, W\) or \(B, C, H, W\)"),
    (torch.randint(0, 255, (3, 8, 8)), {}, TypeError, "float tensor"),
    (torch.full((3, 8, 8), 255.0), {}, ValueError, r"pixels in \[0, 1\]"),
    (torch.full((3, 8, 8), float("nan")), {}, ValueError, "NaN"),
    (torch.rand(2, 3, 8, 8), {"single": True}, ValueError, "one image"),
    (torch.rand(4, 8, 8), {"channels": 3}, ValueError, "grayscale or RGBA"),
    (torch.rand(1, 8, 8), {"model": models.MnistCNN(), "channels": 3}, ValueError, "channels"),
])
def test_check_images_refuses_plausible_mistakes_with_a_sentence(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        core.check_images(x, **kwargs)


def test_check_images_returns_a_detached_batch_copy():
    x = torch.rand(3, 5, 5, requires_grad=True)
    out = core.check_images(x, model=models.MnistCNN(), channels=3)
    assert out.shape == (1, 3, 5, 5) and not out.requires_grad
    out.zero_()
    assert x.abs().sum() > 0


@pytest.mark.parametrize("call, error", [
    (lambda: core.check_int(True, "n"), TypeError), (lambda: core.check_int(0, "n"), ValueError),
    (lambda: core.check_int(5, "n", maximum=4), ValueError), (lambda: core.check_number("1", "lr"), TypeError),
    (lambda: core.check_number(0.0, "lr", low_open=True), ValueError),
    (lambda: core.check_number(float("nan"), "w"), ValueError),
    (lambda: core.check_labels(torch.tensor([0.5]), 1), TypeError),
    (lambda: core.check_labels(torch.tensor([0, 1]), 3), ValueError),
    (lambda: core.check_labels(torch.tensor([0, 10]), 2, num_classes=10), ValueError),
    (lambda: core.check_model(nn.ReLU()), ValueError), (lambda: core.as_dataset([1, 2]), TypeError),
])
def test_scalar_and_label_checks(call, error):
    with pytest.raises(error):
        call()


# --------------------------------------------------------------------------- layers by name


class _Counting(nn.Module):
    """Counts its calls: proves that the forward pass stopped before it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_capture_returns_the_named_outputs_and_stops_after_the_last():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), _Counting())
    x = torch.rand(2, 3, 9, 9)
    out = core.capture(net, x, ["0", "2"])
    assert torch.allclose(out["0"], net[0](x)) and torch.allclose(out["2"], net[2](net[1](net[0](x))))
    assert net[3].calls == 0  # capture stopped before the last module


def test_capture_keeps_the_graph_for_gradients():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False))
    x = torch.rand(1, 1, 5, 5, requires_grad=True)
    core.capture(net, x, ["0"])["0"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_or_unused_layers_get_a_sentence():
    net = models.MnistCNN()
    with pytest.raises(ValueError, match="no module named 'conv9'.*layer_names"):
        core.get_module(net, "conv9")
    with pytest.raises(TypeError, match="module name"):
        core.get_module(net, 3)
    net.unused = nn.ReLU()
    with pytest.raises(ValueError, match="not called"):
        core.capture(net, torch.rand(1, 1, 28, 28), ["unused"])


def test_layer_features_equal_a_manual_forward_and_restore_the_model():
    torch.manual_seed(0)
    net = models.MnistCNN().train()
    x = torch.rand(7, 1, 28, 28)
    feats = core.layer_features(net, x, "relu2", batch_size=3)
    net.eval()
    expected = net.relu2(net.conv2(net.pool1(net.relu1(net.conv1(net.normalize(x))))))
    net.train()
    assert torch.allclose(feats, expected, atol=1e-6)
    assert net.training and all(p.requires_grad for p in net.parameters())
    from_dataset = core.layer_features(net, TensorDataset(x, torch.zeros(7)), "relu2", flatten=True)
    assert torch.allclose(from_dataset, feats.flatten(1), atol=1e-6)


def test_layer_features_work_by_name_on_the_imagenet_network():
    model = models.pretrained()
    feats = core.layer_features(model, torch.rand(2, 3, 64, 64), "net.blocks.3")
    assert feats.shape == (2, 80, 4, 4)


# --------------------------------------------------------------------------- modes


def test_inspection_mode_freezes_and_restores_everything():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True), nn.Dropout()).train()
    net[0].bias.requires_grad_(False)
    with core.inspection_mode(net):
        assert not net.training and not net[1].inplace
        assert not any(p.requires_grad for p in net.parameters())
    assert net.training and net[2].training and net[1].inplace
    assert net[0].weight.requires_grad and not net[0].bias.requires_grad


def test_restoring_restores_even_after_an_error():
    net = nn.Linear(2, 2).eval()
    with pytest.raises(RuntimeError), core.restoring(net):
        net.train().requires_grad_(False)
        raise RuntimeError
    assert not net.training and net.weight.requires_grad


def test_progress_bar_honours_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert core.progress_bar(range(3)).disable
    assert core.progress_bar(range(3), progress=False).disable


# --------------------------------------------------------------------------- training


def _halves(n=200, seed=0):
    """Two easy classes of 1×28×28 images: bright top half vs bright bottom half."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    y = torch.arange(n) % 2
    x[y == 0, :, :14] += 0.6
    x[y == 1, :, 14:] += 0.6
    return TensorDataset(x.clamp(0, 1), y)


def test_train_learns_and_updates_only_trainable_parameters():
    torch.manual_seed(0)
    net = models.MnistCNN()
    net.conv1.requires_grad_(False)
    frozen = [p.clone() for p in net.conv1.parameters()]
    history = core.train(net, _halves(), epochs=2, lr=3e-3, test_data=_halves(seed=1), progress=False)
    assert history["test_acc"][-1] > 0.95 and len(history["train_acc"]) == 2
    assert history["step"] == [4, 8] and len(history["loss"]) == 8 and len(history["seconds"]) == 2
    assert all(torch.equal(p, q) for p, q in zip(net.conv1.parameters(), frozen, strict=True))
    assert not net.training and not net.conv1.weight.requires_grad and net.fc2.weight.requires_grad


def test_train_keeps_the_statistics_of_frozen_batchnorm_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 2))
    net[:2].requires_grad_(False)
    before = net[1].running_mean.clone()
    core.train(net, _halves(64), epochs=1, progress=False)
    assert torch.equal(net[1].running_mean, before)


def test_train_passes_a_custom_loss():
    seen = []

    def loss_fn(model, x, y):
        seen.append(len(x))
        return core.cross_entropy_step(model, x, y)

    core.train(models.MnistCNN(), _halves(50), batch_size=20, loss_fn=loss_fn, progress=False)
    assert seen == [20, 20, 10]


def test_train_rejects_bad_arguments():
    net = models.MnistCNN()
    with pytest.raises(TypeError, match="Dataset"):
        core.train(net, [1, 2, 3])
    with pytest.raises(ValueError, match="epochs"):
        core.train(net, _halves(), epochs=0)
    with pytest.raises(ValueError, match="lr"):
        core.train(net, _halves(), lr=0)
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        core.train(net, _halves())


def test_predict_and_accuracy_agree_and_restore_mode():
    net = models.MnistCNN().train()
    data = _halves(50)
    predictions = core.predict(net, data)
    assert net.training
    assert core.accuracy(net, data) == pytest.approx((predictions == data.tensors[1]).float().mean().item())


def test_cached_model_trains_once(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    fits = []

    def build():
        torch.manual_seed(1)
        return nn.Linear(2, 2)

    def fit(model):
        fits.append(1)
        with torch.no_grad():
            model.weight.fill_(3.0)

    first = core.cached_model("toy", {"a": 1}, build, fit)
    second = core.cached_model("toy", {"a": 1}, build, fit)
    third = core.cached_model("toy", {"a": 2}, build, fit)
    assert fits == [1, 1] and torch.equal(second.weight, first.weight) and second.weight.eq(3).all()
    assert len(list((tmp_path / "models").glob("toy_*.pt"))) == 2 and third.is_pretrained
    assert not list((tmp_path / "models").glob("*.tmp"))


# --------------------------------------------------------------------------- receptive fields


def _chain_formula(layers):
    r, j = 1, 1
    for k, s in layers:
        r, j = r + (k - 1) * j, j * s
    return r, j


def _gradient_support(model: nn.Module, layer: str, channels: int, size: int) -> tuple[int, int]:
    """Brute force: rows of the input on which the centre unit of ``layer`` depends, in a linearised copy
    (activations -> identity, max -> average pooling, positive weights, so nothing cancels)."""
    linear = copy.deepcopy(model).double().eval()
    for name, module in list(linear.named_modules()):
        parent, _, child = name.rpartition(".")
        owner = linear.get_submodule(parent) if parent else linear
        if isinstance(module, (nn.ReLU, nn.ReLU6, nn.Dropout)):
            setattr(owner, child, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            setattr(owner, child, nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
    with torch.no_grad():
        for param in linear.parameters():
            param.copy_(torch.rand_like(param) + 0.5)
    x = torch.zeros(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    out = core.capture(linear, x, [layer])[layer]
    h, w = out.shape[-2:]
    (grad,) = torch.autograd.grad(out[0, :, h // 2, w // 2].sum(), x)
    rows = grad[0].abs().sum(0).sum(1).nonzero()
    return int(rows.min()), int(rows.max())


@pytest.mark.parametrize("spec", [[(3, 1), (3, 1)], [(3, 2), (3, 2), (5, 1)], [(7, 2), (3, 2), (3, 1), (1, 1)],
                                  [(5, 1), (2, 2), (3, 1), (2, 2), (3, 1)]])
def test_receptive_field_of_a_chain_equals_the_closed_form_and_the_gradient_support(spec):
    layers = []
    for k, s in spec:
        layers += [nn.MaxPool2d(k, s) if k == s == 2 else nn.Conv2d(1, 1, k, s), nn.ReLU()]
    net = nn.Sequential(*layers)
    size, stride = _chain_formula(spec)
    last = str(len(layers) - 1)
    assert core.receptive_field(net, last, channels=1) == {"size": size, "stride": stride}
    top, bottom = _gradient_support(net, last, channels=1, size=64)
    assert bottom - top + 1 == size


class _Residual(nn.Module):
    """x + f(x) with a strided main path and a 1x1 strided shortcut, as in ResNet."""

    def __init__(self, k):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(2, 2, k, 2, k // 2), nn.ReLU(), nn.Conv2d(2, 2, k, 1, k // 2))
        self.shortcut = nn.Conv2d(2, 2, 1, 2)

    def forward(self, x):
        return self.main(x) + self.shortcut(x)


@pytest.mark.parametrize("kernels", [(3,), (3, 5), (5, 3, 3)])
def test_receptive_field_of_residual_networks_equals_the_gradient_support(kernels):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), *[_Residual(k) for k in kernels])
    field = core.receptive_field(net, str(len(kernels)), channels=1)
    top, bottom = _gradient_support(net, str(len(kernels)), channels=1, size=128)
    assert field["size"] == bottom - top + 1 and field["stride"] == 2 ** len(kernels)


def test_receptive_fields_of_known_networks():
    """Published values: ResNet-18's layer3 and layer4 (211, 435), AlexNet's and VGG-16's pool5 (195, 212)."""
    resnet = models.untrained("resnet18")
    assert core.receptive_field(resnet, "net.layer3") == {"size": 211, "stride": 16}
    assert core.receptive_field(resnet, "net.layer4") == {"size": 435, "stride": 32}
    assert core.receptive_field(models.untrained("alexnet"), "net.features.12")["size"] == 195
    assert core.receptive_field(models.untrained("vgg16"), "net.features.30")["size"] == 212


def test_receptive_fields_of_the_imagenet_network_match_the_gradient_support():
    model = models.pretrained()
    for layer in ["net.conv_stem", "net.blocks.1", "net.blocks.3"]:
        field = core.receptive_field(model, layer)
        top, bottom = _gradient_support(model, layer, channels=3, size=256)
        assert field["size"] == bottom - top + 1
    assert core.receptive_field(model, "net.blocks.6") == {"size": 851, "stride": 32}
    with pytest.raises(ValueError, match="feature map"):
        core.receptive_field(model, "net.global_pool")


# --------------------------------------------------------------------------- total variation


def _tv_loops(x, beta):
    total = 0.0
    *_, h, w = x.shape
    for index in itertools.product(*[range(n) for n in x.shape[:-2]]):
        image = x[index]
        for i in range(h - 1):
            for j in range(w - 1):
                squared = (image[i, j + 1] - image[i, j]) ** 2 + (image[i + 1, j] - image[i, j]) ** 2
                total += float(squared) ** (beta / 2)
    return total


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_total_variation_equals_its_double_loop(beta):
    x = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert core.total_variation(x, beta).item() == pytest.approx(_tv_loops(x, beta))


def test_total_variation_has_finite_gradients_on_flat_images():
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    core.total_variation(x, beta=1.0).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="beta"):
        core.total_variation(torch.rand(3, 4, 4), beta=0)
    with pytest.raises(ValueError, match="H, W >= 2"):
        core.total_variation(torch.rand(3, 1, 4))


def test_the_course_device_is_used_for_cached_models(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    model = core.cached_model("toy_device", {}, lambda: nn.Linear(1, 1), lambda m: None)
    assert core.model_device(model).type == config.device().type
