"""Tests of utils.transfer: freezing, feature extraction, probes, fine-tuning, the 2x2 table.

Independent references: the parameter lists are written out by hand from the
architectures (torchvision's ResNet/VGG/SqueezeNet definitions); "frozen means
unchanged" is checked bit for bit with ``torch.equal`` against a copy of the
state dict (BatchNorm running statistics included); feature shapes against
the layer arithmetic of each architecture; the probe against data whose
classes a linear rule separates by construction.
"""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from utils import models, transfer

# ImageNet models are built once per module (random weights offline: the tests
# are about which weights move, not about what they know).


@pytest.fixture(scope="module")
def resnet():
    return models.pretrained("resnet18")


@pytest.fixture(scope="module")
def mnist_source():
    return models.mnist_cnn(digits=(0, 1, 2, 3, 4))


def _images(n=24, channels=3, size=32, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, channels, size, size, generator=g),
                         torch.arange(n) % classes)


# --------------------------------------------------------------------------- blocks and freeze


def test_blocks_by_hand():
    assert transfer.parametrised_blocks(models.MnistCNN()) == [("conv1",), ("conv2",), ("fc1",), ("fc2",)]
    resnet_blocks = transfer.parametrised_blocks(models.pretrained("resnet18"))
    assert resnet_blocks == [("net.conv1", "net.bn1")] + [
        (f"net.layer{i}.{j}",) for i in range(1, 5) for j in range(2)] + [("net.fc",)]
    vgg = transfer.parametrised_blocks(models.pretrained("vgg16"))
    assert len(vgg) == 16 and vgg[0] == ("net.features.0",) and vgg[-1] == ("net.classifier.6",)
    squeeze = transfer.parametrised_blocks(models.pretrained("squeezenet1_1"))
    assert len(squeeze) == 10 and squeeze[-1] == ("net.classifier.1",)
    assert len(transfer.parametrised_blocks(models.pretrained("alexnet"))) == 8


@pytest.mark.parametrize("trainable, expected", [
    ("head", ["fc2.weight", "fc2.bias"]),
    (1, ["fc2.weight", "fc2.bias"]),
    (2, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]),
    (3, ["conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]),
    ("all", ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
             "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]),
])
def test_freeze_mnist_exact(trainable, expected):
    model = transfer.freeze(models.MnistCNN(), trainable)
    assert transfer.trainable_names(model) == expected


def test_freeze_resnet_exact(resnet):
    model = copy.deepcopy(resnet)
    assert transfer.trainable_names(transfer.freeze(model, "head")) == ["net.fc.weight", "net.fc.bias"]
    names = transfer.trainable_names(transfer.freeze(model, 3))
    expected = [n for n, _ in model.named_parameters()
                if n.startswith(("net.layer4.0.", "net.layer4.1.", "net.fc."))]
    assert names == expected
    first = transfer.trainable_names(transfer.freeze(model, 10))
    assert first == [n for n, _ in model.named_parameters()]  # 10 blocks = everything


@pytest.mark.parametrize("name", ["vgg16", "squeezenet1_1", "alexnet"])
def test_freeze_head_torchvision(name):
    model = transfer.freeze(models.pretrained(name), "head")
    head = transfer.parametrised_blocks(model)[-1][0]
    assert transfer.trainable_names(model) == [f"{head}.weight", f"{head}.bias"]


def test_freeze_rejects_bad_values():
    with pytest.raises(ValueError, match="out of range"):
        transfer.freeze(models.MnistCNN(), 5)
    with pytest.raises(ValueError, match="'head', 'all'"):
        transfer.freeze(models.MnistCNN(), "last")
    with pytest.raises(TypeError, match="nn.Module"):
        transfer.freeze("resnet", "head")


# --------------------------------------------------------------------------- heads


@pytest.mark.parametrize("name, size", [("resnet18", 32), ("squeezenet1_1", 64), ("alexnet", 64),
                                        ("vgg16", 32)])
def test_replace_head(name, size):
    model = transfer.replace_head(models.pretrained(name), 4)
    assert model(torch.rand(2, 3, size, size)).shape == (2, 4)


def test_replace_head_mnist_and_errors():
    assert transfer.replace_head(models.MnistCNN(), 3)(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        transfer.replace_head(models.MnistCNN(), 1)


def test_reinitialise_changes_weights_and_resets_bn(resnet):
    model = copy.deepcopy(resnet)
    model.net.bn1.running_mean.fill_(3.0)
    transfer.reinitialise(model, seed=1)
    assert not torch.equal(model.net.conv1.weight, resnet.net.conv1.weight)
    assert torch.equal(model.net.bn1.running_mean, torch.zeros(64))


# --------------------------------------------------------------------------- features


@pytest.mark.parametrize("layer, dim", [("normalize", 784), ("pool1", 16 * 14 * 14),
                                        ("pool2", 32 * 7 * 7), ("relu3", 64), ("fc2", 10)])
def test_feature_shapes_mnist(layer, dim):
    feats = transfer.extract_features(models.MnistCNN(), _images(7, 1, 28), layer, batch_size=3)
    assert feats.shape == (7, dim)


@pytest.mark.parametrize("layer, dim", [("net.layer1", 64 * 16 * 16), ("net.layer2", 128 * 8 * 8),
                                        ("net.layer3", 256 * 4 * 4), ("net.layer4", 512 * 2 * 2),
                                        ("net.avgpool", 512), ("net.fc", 1000)])
def test_feature_shapes_resnet(resnet, layer, dim):
    assert transfer.extract_features(resnet, torch.rand(3, 3, 64, 64), layer).shape == (3, dim)


def test_features_match_forward_and_restore_mode():
    model = models.MnistCNN().train()
    x = torch.rand(5, 1, 28, 28)
    feats = transfer.extract_features(model, x, "fc2", batch_size=2)
    assert model.training  # mode restored
    model.eval()
    torch.testing.assert_close(feats, model(x))  # the last layer's output is the logits
    with pytest.raises(ValueError, match="No module named 'conv9'"):
        transfer.extract_features(model, x, "conv9")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        transfer.extract_features(model, torch.rand(28, 28), "fc2")


# --------------------------------------------------------------------------- linear probe


def test_linear_probe_separable():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 20)) * 10  # four far-apart clusters
    y = np.repeat(np.arange(4), 50)
    X = centres[y] + rng.normal(size=(200, 20))
    Xt = centres[y] + rng.normal(size=(200, 20))
    assert transfer.linear_probe(X, y, Xt, y) == 1.0
    assert transfer.linear_probe(torch.tensor(X), torch.tensor(y), torch.tensor(Xt), torch.tensor(y)) == 1.0


def test_linear_probe_chance_on_noise():
    rng = np.random.default_rng(1)
    X, Xt = rng.normal(size=(300, 5)), rng.normal(size=(2000, 5))
    acc = transfer.linear_probe(X, rng.integers(0, 2, 300), Xt, rng.integers(0, 2, 2000))
    assert 0.4 < acc < 0.6  # labels independent of features: no better than a coin


def test_linear_probe_validates():
    with pytest.raises(ValueError, match="differ in dimension"):
        transfer.linear_probe(np.zeros((4, 3)), np.array([0, 1, 0, 1]), np.zeros((2, 5)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        transfer.linear_probe(np.zeros((4, 3, 2)), np.array([0, 1, 0, 1]), np.zeros((2, 6)), np.array([0, 1]))


# --------------------------------------------------------------------------- fine-tuning


def _changed(before: dict, model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_fine_tune_head_resnet_bit_identical(resnet):
    model = transfer.replace_head(copy.deepcopy(resnet), 3)
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    history = transfer.fine_tune(model, _images(), trainable="head", epochs=2, batch_size=8,
                                 progress=False)
    assert _changed(before, model) == {"net.fc.weight", "net.fc.bias"}  # BN running stats included
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert len(history["loss"]) == 6 and history["step"] == [3, 6]


def test_fine_tune_all_moves_bn_stats(resnet):
    model = transfer.replace_head(copy.deepcopy(resnet), 3)
    before = copy.deepcopy(model.state_dict())
    transfer.fine_tune(model, _images(), trainable="all", epochs=1, batch_size=8, progress=False)
    assert "net.bn1.running_mean" in _changed(before, model)
    assert "net.layer1.0.conv1.weight" in _changed(before, model)


@pytest.mark.parametrize("trainable, moved", [
    (2, {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}),
    ("head", {"fc2.weight", "fc2.bias"}),
])
def test_fine_tune_only_trainable_change(mnist_source, trainable, moved):
    train, test = transfer.digit_task((5, 6, 7, 8, 9))
    model = transfer.replace_head(copy.deepcopy(mnist_source), 5)
    before = copy.deepcopy(model.state_dict())
    history = transfer.fine_tune(model, transfer.subsample_per_class(train, 20),
                                 transfer.subsample_per_class(test, 40), trainable=trainable,
                                 epochs=10, lr=3e-3, progress=False)
    assert _changed(before, model) == moved
    assert set(history) == {"loss", "step", "train_acc", "test_acc"}
    if trainable == 2:  # far above chance (0.2): the source features transfer to digits 5-9
        assert history["test_acc"][-1] > 0.6


def test_fine_tune_validates():
    with pytest.raises(ValueError, match="epochs"):
        transfer.fine_tune(models.MnistCNN(), _images(4, 1, 28), epochs=0)


# --------------------------------------------------------------------------- tasks and the table


def test_digit_task_labels():
    train, test = transfer.digit_task((5, 6, 7, 8, 9))
    assert set(train.tensors[1].tolist()) == set(range(5)) == set(test.tensors[1].tolist())
    small = transfer.subsample_per_class(train, 3)
    assert torch.bincount(small.tensors[1]).tolist() == [3] * 5


def test_crop_task_split_and_contrast():
    train, test = transfer.crop_task(("brick", "grass", "gravel"), n_train=8, n_test=4, size=20, scale=64)
    assert train.tensors[0].shape == (24, 1, 20, 20) and test.tensors[0].shape == (12, 1, 20, 20)
    assert torch.bincount(test.tensors[1]).tolist() == [4, 4, 4]
    means = train.tensors[0].mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.full_like(means, 0.5), atol=0.05)  # brightness equalised
    rgb, _ = transfer.crop_task(("chelsea", "coffee"), 2, 2, size=32, scale=64, gray=False)
    assert rgb.tensors[0].shape == (4, 3, 32, 32)


def test_transfer_table_small(mnist_source):
    similar = transfer.digit_task((5, 6, 7, 8, 9))
    different = transfer.crop_task(("brick", "grass", "gravel"), n_train=20, n_test=20)
    table = transfer.transfer_table(mnist_source, {"similar": similar, "different": different},
                                    {"little": 3, "more": 10}, "relu3", "pool2", steps=5, progress=False)
    assert isinstance(table, pd.DataFrame) and table.shape == (4, 5)
    assert list(table.columns) == list(transfer.STRATEGIES)
    assert table.index.names == ["data size", "similarity"]
    assert ((table >= 0) & (table <= 1)).all().all()
    fig = transfer.plot_transfer_table(table)
    assert len(fig.axes) == 2


def test_transfer_table_imagenet_branch_runs(resnet):
    """The full-mode experiment's code path (RGB crops, ResNet layers) on a tiny scale."""
    targets = {"photos": transfer.crop_task(("chelsea", "coffee"), 4, 4, size=32, scale=64, gray=False)}
    table = transfer.transfer_table(resnet, targets, {"little": 2}, "net.avgpool", "net.layer2",
                                    strategies=("probe: top layer", "fine-tune last blocks"),
                                    steps=1, progress=False)
    assert table.shape == (1, 2)
    depth = transfer.probe_by_depth(resnet, targets, ["net.layer1", "net.avgpool"])
    assert depth.shape == (2, 1)
