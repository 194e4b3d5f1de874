"""utils.models: the weights code path with a state dict placed in torch's hub
cache, the random fallback, normalisation as first layer, and training."""

import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.data import TensorDataset

from utils import config, models


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty torch hub cache (TORCH_HOME) for the duration of a test."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(config, "_FALLBACKS", {})
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def _place_weights(folder: Path, name: str, seed: int = 3) -> dict:
    """Save a random state dict where torchvision's weights API looks for the real one."""
    builder, enum_name = models._ARCHITECTURES[name]
    torch.manual_seed(seed)
    state = builder(weights=None).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    url = getattr(torchvision.models, enum_name).IMAGENET1K_V1.url
    torch.save(state, folder / os.path.basename(url))
    return state


@pytest.mark.parametrize("name", ["squeezenet1_1", "resnet18"])
def test_pretrained_loads_cached_weights_through_the_weights_api(hub, name):
    state = _place_weights(hub, name)
    model = models.pretrained(name)  # offline (conftest): only the cache can serve it
    assert models.is_pretrained(model)
    loaded = model.net.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in state.items())


def test_missing_weights_fall_back_to_seeded_random_init(hub, capsys):
    a = models.pretrained("squeezenet1_1")
    assert not models.is_pretrained(a)
    assert "ImageNet weights for squeezenet1_1 are unavailable" in capsys.readouterr().out
    b = models.pretrained("squeezenet1_1")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_corrupt_cached_weights_fall_back(hub, capsys):
    hub.mkdir(parents=True)
    url = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url
    (hub / os.path.basename(url)).write_bytes(b"not a checkpoint")
    assert not models.is_pretrained(models.pretrained("squeezenet1_1"))
    assert "unavailable" in capsys.readouterr().out


def test_pretrained_takes_unit_range_pixels_and_is_in_eval_mode(hub):
    model = models.pretrained("squeezenet1_1")
    assert not model.training and isinstance(model.normalize, models.Normalize)
    x = torch.rand(2, 3, 64, 64)
    expected = model.net((x - torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1))
                         / torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1))
    assert torch.allclose(model(x), expected, atol=1e-5)
    assert "net.features.0" in dict(model.named_modules())


@pytest.mark.parametrize("name, error", [("vgg99", ValueError), (19, TypeError)])
def test_unknown_models_get_a_sentence(name, error):
    with pytest.raises(error, match="(?i)model"):
        models.pretrained(name)


def test_is_pretrained_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        models.is_pretrained("resnet18")


def test_imagenet_labels_are_available_offline():
    labels = models.imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and "giant panda" in labels


def test_mnist_cnn_shapes_and_named_layers():
    net = models.MnistCNN()
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    for name in ["normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1", "relu3", "fc2"]:
        assert name in dict(net.named_modules())


def _blobs(n=200, seed=0):
    """Two easy classes of 1×28×28 images: bright top half vs bright bottom half."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    y = torch.arange(n) % 2
    x[y == 0, :, :14] += 0.6
    x[y == 1, :, 14:] += 0.6
    return TensorDataset(x.clamp(0, 1), y)


def test_train_classifier_learns_and_updates_only_trainable_parameters():
    torch.manual_seed(0)
    net = models.MnistCNN()
    for p in net.conv1.parameters():
        p.requires_grad_(False)
    frozen = [p.clone() for p in net.conv1.parameters()]
    data = _blobs()
    history = models.train_classifier(net, data, epochs=2, lr=3e-3, test_data=data, progress=False)
    assert history["test_acc"][-1] > 0.95 and len(history["train_acc"]) == 2
    assert all(torch.equal(p, q) for p, q in zip(net.conv1.parameters(), frozen, strict=True))
    assert not net.training


def test_train_classifier_rejects_bad_arguments():
    net = models.MnistCNN()
    with pytest.raises(TypeError, match="Dataset"):
        models.train_classifier(net, [1, 2, 3])
    with pytest.raises(ValueError, match="epochs"):
        models.train_classifier(net, _blobs(), epochs=0)
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        models.train_classifier(net, _blobs())


def test_predict_and_accuracy_agree_and_restore_mode():
    net = models.MnistCNN().train()
    data = _blobs(50)
    predictions = models.predict(net, data)
    assert net.training
    expected = (predictions == data.tensors[1]).float().mean().item()
    assert models.accuracy(net, data) == pytest.approx(expected)


def test_mnist_cnn_is_cached_and_reloaded_identically(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    first = models.mnist_cnn(digits=(0, 1), epochs=1)
    saved = list((tmp_path / "models").glob("mnist_cnn_*.pt"))
    assert len(saved) == 1 and models.is_pretrained(first)
    second = models.mnist_cnn(digits=(0, 1), epochs=1)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters(), strict=True))
    assert torch.load(saved[0], weights_only=True).keys() == first.state_dict().keys()


def test_mnist_cnn_rejects_bad_digits():
    with pytest.raises(ValueError, match="digits"):
        models.mnist_cnn(digits=(3, 12))
