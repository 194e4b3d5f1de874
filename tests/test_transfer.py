"""Tests of utils.transfer: blocks and freezing, the cut network, features, probes, fine-tuning, the experiment.

Independent references: the block lists are written out by hand from the
architectures; "frozen means unchanged" is checked bit for bit with
``torch.equal`` against a copy of the state dict (BatchNorm running
statistics included); training the tail on cached front outputs is checked
against fine-tuning the whole model with the same blocks trainable; pooled
features against pooling :func:`utils.core.layer_features` by hand; the
cross-validated probe against scikit-learn's ``cross_val_score``; probes
against data whose classes a linear rule separates by construction. The
claim that needs training (ImageNet features transfer to photographs) is
asserted on the trained network, and the random-weight control fails it.
"""

import copy
import dataclasses
import io
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from utils import assets, core, models, transfer

LITE0_BLOCKS = [("net.conv_stem", "net.bn1")] + [(f"net.blocks.{i}",) for i in range(7)] + [
    ("net.conv_head", "net.bn2"), ("net.classifier",)]


@pytest.fixture(scope="module")
def lite0():
    """The architecture only (random weights): these tests are about which weights move."""
    return models.untrained("efficientnet_lite0")


def _images(n=8, channels=3, size=32, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, channels, size, size, generator=g), torch.arange(n) % classes)


@pytest.fixture(scope="module")
def tiny_setup():
    """The chapter's experiment on a tiny scale: random-weight source, 32 px, three classes."""
    photos = transfer.crop_task(("chelsea", "coffee", "rocket"), 6, 4, size=32, scale=128)
    digits = transfer.digit_task((0, 1, 2), n_train=6, n_test=4, size=32, rgb=True)
    return transfer.TransferSetup(
        source=models.untrained("efficientnet_lite0"), control=models.untrained("efficientnet_lite0", seed=1),
        targets={"photos": photos, "digits": digits},
        similarity={"photos": "very similar", "digits": "very different"},
        sizes={"very little": 2, "quite a lot": 4}, seeds=(0, 1),
        probe_layers=("net.blocks.1", "net.blocks.3", "net.global_pool"), last_blocks=4, steps=1, batch_size=4,
        lr={"fine-tune last blocks": 1e-3, "fine-tune all": 1e-3, "from scratch": 1e-3})


# --------------------------------------------------------------------------- blocks and freeze


def test_blocks_by_hand(lite0):
    assert transfer.parametrised_blocks(models.MnistCNN()) == [("conv1",), ("conv2",), ("fc1",), ("fc2",)]
    assert transfer.parametrised_blocks(lite0) == LITE0_BLOCKS


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


def test_freeze_efficientnet_exact(lite0):
    model = copy.deepcopy(lite0)
    assert transfer.trainable_names(transfer.freeze(model, "head")) == ["net.classifier.weight", "net.classifier.bias"]
    names = transfer.trainable_names(transfer.freeze(model, 4))
    expected = [n for n, _ in model.named_parameters()
                if n.startswith(("net.blocks.5.", "net.blocks.6.", "net.conv_head.", "net.bn2.", "net.classifier."))]
    assert names == expected
    assert transfer.trainable_names(transfer.freeze(model, "all")) == [n for n, _ in model.named_parameters()]


def test_freeze_rejects_bad_values():
    with pytest.raises(ValueError, match="out of range"):
        transfer.freeze(models.MnistCNN(), 5)
    with pytest.raises(ValueError, match="'head', 'all'"):
        transfer.freeze(models.MnistCNN(), "last")
    with pytest.raises(TypeError, match="nn.Module"):
        transfer.freeze("efficientnet", "head")


# --------------------------------------------------------------------------- heads and cuts


def test_replace_head(lite0):
    model = transfer.replace_head(copy.deepcopy(lite0), 4)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    assert transfer.replace_head(models.MnistCNN(), 3)(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        transfer.replace_head(models.MnistCNN(), 1)
    with pytest.raises(TypeError, match="Linear heads"):
        transfer.replace_head(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)), 3)


@pytest.mark.parametrize("layer", ["normalize", "net.conv_stem", "net.blocks.4", "net.global_pool"])
def test_split_at_composes_to_the_model(lite0, layer):
    x = torch.rand(3, 3, 40, 40)
    front, tail = transfer.split_at(lite0, layer, x[:1])
    torch.testing.assert_close(tail(front(x)), lite0(x), atol=1e-5, rtol=1e-5)
    assert any(m is lite0.net.classifier for m in tail.modules())  # the model's own modules, not copies


def test_split_at_refuses(lite0):
    with pytest.raises(ValueError, match="net.blocks.4.0"):
        transfer.split_at(lite0, "net.blocks.4.0", torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="except the last"):
        transfer.split_at(lite0, "net.classifier", torch.rand(1, 3, 32, 32))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.head = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.head(x + self.conv(x))

    with pytest.raises(ValueError, match="not the chain"):
        transfer.split_at(Residual(), "conv", torch.rand(1, 3, 8, 8))


# --------------------------------------------------------------------------- fine-tuning


def _changed(before: dict, model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_fine_tune_head_leaves_the_rest_bit_identical(lite0):
    model = transfer.replace_head(copy.deepcopy(lite0), 2)
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    history = transfer.fine_tune(model, _images(), trainable="head", epochs=2, batch_size=4, progress=False)
    assert _changed(before, model) == {"net.classifier.weight", "net.classifier.bias"}  # BN statistics included
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert history["step"] == [2, 4] and len(history["seconds"]) == 2  # core.train's history


def test_fine_tune_all_moves_bn_statistics(lite0):
    model = transfer.replace_head(copy.deepcopy(lite0), 2)
    before = copy.deepcopy(model.state_dict())
    transfer.fine_tune(model, _images(), trainable="all", epochs=1, batch_size=4, progress=False)
    changed = _changed(before, model)
    assert "net.bn1.running_mean" in changed and "net.conv_stem.weight" in changed


def test_training_the_tail_on_cached_features_equals_fine_tuning_the_last_blocks(lite0):
    """The chapter's shortcut: same weights as fine_tune(model, trainable=k) on the images."""
    data = _images(8, size=32)
    whole = transfer.replace_head(copy.deepcopy(lite0), 2)
    cut = copy.deepcopy(whole)
    before = copy.deepcopy(whole.state_dict())
    transfer.fine_tune(whole, data, trainable=4, epochs=2, batch_size=4, seed=3, progress=False)
    front, tail = transfer.split_at(cut, "net.blocks.4", data.tensors[0][:1])
    cached = core.layer_features(cut, data, "net.blocks.4")
    torch.testing.assert_close(cached, front(data.tensors[0]).detach(), atol=1e-5, rtol=1e-5)
    transfer.fine_tune(tail, TensorDataset(cached, data.tensors[1]), trainable="all", epochs=2, batch_size=4,
                       seed=3, progress=False)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(cut.state_dict()[name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert all(k.startswith(("net.blocks.5", "net.blocks.6", "net.conv_head", "net.bn2", "net.classifier"))
               for k in _changed(before, whole))


@pytest.mark.parametrize("trainable, moved", [
    (2, {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}),
    ("head", {"fc2.weight", "fc2.bias"}),
])
def test_fine_tune_only_trainable_change(trainable, moved):
    model = transfer.replace_head(models.MnistCNN(), 2)
    before = copy.deepcopy(model.state_dict())
    transfer.fine_tune(model, _images(8, 1, 28), trainable=trainable, epochs=1, batch_size=4, progress=False)
    assert _changed(before, model) == moved


def test_fine_tune_validates():
    with pytest.raises(ValueError, match="epochs"):
        transfer.fine_tune(models.MnistCNN(), _images(4, 1, 28), epochs=0)
    with pytest.raises(TypeError, match="nn.Module"):
        transfer.fine_tune("mnist", _images(4, 1, 28))


# --------------------------------------------------------------------------- features and probes


def test_stage_features_equal_pooling_by_hand(lite0):
    x = torch.rand(5, 3, 64, 64)
    feats = transfer.stage_features(lite0, x, ["net.blocks.2", "net.blocks.6", "net.global_pool"], batch_size=2)
    maps = core.layer_features(lite0, x, "net.blocks.2")  # (5, 40, 8, 8): round(sqrt(2048 / 40)) = 7
    torch.testing.assert_close(feats["net.blocks.2"], F.adaptive_avg_pool2d(maps, 7).flatten(1))
    maps = core.layer_features(lite0, x, "net.blocks.6")  # (5, 320, 2, 2): sqrt(2048 / 320) = 2.5 -> 2
    torch.testing.assert_close(feats["net.blocks.6"], maps.flatten(1))
    torch.testing.assert_close(feats["net.global_pool"], core.layer_features(lite0, x, "net.global_pool"))
    with pytest.raises(ValueError, match="no module named 'net.blocks.9'"):
        transfer.stage_features(lite0, x, ["net.blocks.9"])


def test_linear_probe_separable():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 20)) * 10  # four far-apart clusters
    y = np.repeat(np.arange(4), 50)
    X, Xt = centres[y] + rng.normal(size=(200, 20)), centres[y] + rng.normal(size=(200, 20))
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
    with pytest.raises(ValueError, match="single class"):
        transfer.linear_probe(np.zeros((2, 3)), np.array([1, 1]), np.zeros((2, 3)), np.array([1, 1]))


def test_cross_validated_probe_equals_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 8)
    X = rng.normal(size=(24, 6)) + y[:, None] * 0.8
    expected = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), X, y,
                               cv=StratifiedKFold(3, shuffle=True, random_state=5)).mean()
    assert transfer.cross_validated_probe(X, y, folds=3, seed=5) == pytest.approx(expected)
    with pytest.raises(ValueError, match="two examples"):
        transfer.cross_validated_probe(X[:4], np.array([0, 1, 1, 2]))


def test_imagenet_features_transfer_and_random_ones_do_not():
    """Trained network: a top-layer probe tells four photographs' crops apart; the random control cannot."""
    train, test = transfer.crop_task(("chelsea", "coffee", "astronaut", "rocket"), 10, 10, size=64, scale=256)
    scores = {}
    for label, model in (("trained", models.pretrained()), ("random", models.untrained())):
        feats = [core.layer_features(model, data, "net.global_pool") for data in (train, test)]
        scores[label] = transfer.linear_probe(feats[0], train.tensors[1], feats[1], test.tensors[1])
    assert scores["trained"] >= 0.7, scores  # chance is 0.25
    assert scores["random"] < 0.6, scores


# --------------------------------------------------------------------------- targets


def test_crop_task_halves_and_contrast():
    train, test = transfer.crop_task(("brick", "grass", "gravel"), 8, 4, size=20, scale=64, sides=(20, 20),
                                     gray=True, standardise=True)
    assert train.tensors[0].shape == (24, 1, 20, 20) and test.tensors[0].shape == (12, 1, 20, 20)
    assert torch.bincount(test.tensors[1]).tolist() == [4, 4, 4]
    means = train.tensors[0].mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.full_like(means, 0.5), atol=0.05)  # brightness equalised
    # unstandardised crops of side == size are windows of the image's top (train) half, found by brute force
    image = assets.load_image("chelsea", size=48)
    crops, _ = transfer.crop_task(("chelsea", "coffee"), 3, 1, size=16, scale=48, sides=(16, 16))
    top = image[:, : image.shape[1] // 2]
    windows = top.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, h, w, 16, 16)
    for crop in crops.tensors[0][:3]:
        diff = (windows - crop[:, None, None]).abs().amax(dim=(0, 3, 4))
        assert diff.min() < 1e-6
    with pytest.raises(ValueError, match="Cannot cut crops"):
        transfer.crop_task(("chelsea", "coffee"), 1, 1, size=16, scale=32, sides=(40, 40))


def test_digit_task():
    train, test = transfer.digit_task((5, 6, 7, 8, 9), n_train=4, n_test=2, size=40, rgb=True)
    assert train.tensors[0].shape == (20, 3, 40, 40) and torch.bincount(test.tensors[1]).tolist() == [2] * 5
    assert torch.equal(train.tensors[0][:, 0], train.tensors[0][:, 2])  # three equal channels
    grey, _ = transfer.digit_task((5, 6), n_train=3)
    first_five = assets.mnist(train=True).tensors
    assert torch.equal(grey.tensors[0][0], first_five[0][first_five[1] == 5][0])  # the first 5 of the split
    with pytest.raises(ValueError, match="distinct"):
        transfer.digit_task((3, 3))


def _fake_imagenette(path, per_split=3):
    """An archive with imagenette2-160's layout: two of its classes, `per_split` JPEGs each."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "val"):
            for wnid in ("n01440764", "n03028079"):
                for i in range(per_split):
                    buffer = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(buffer, "JPEG")
                    info = tarfile.TarInfo(f"imagenette2-160/{split}/{wnid}/{i}.JPEG")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)


def test_imagenette_task_reads_the_archive(tmp_path, monkeypatch):
    path = tmp_path / "imagenette2-160.tgz"
    _fake_imagenette(path)
    train, test = transfer.imagenette_task(2, 1, size=24, path=str(path))
    assert train.tensors[0].shape == (4, 3, 24, 24) and train.tensors[1].tolist() == [0, 0, 4, 4]
    assert test.tensors[1].tolist() == [0, 4]  # tench is class 0, church class 4
    assert 0 <= train.tensors[0].min() and train.tensors[0].max() <= 1

    def offline(name):
        raise OSError("not in the cache")

    monkeypatch.setattr(assets, "download", offline)
    with pytest.raises(OSError):
        transfer.imagenette_task(2, 1)


def test_subsample_per_class():
    data = TensorDataset(torch.arange(12), torch.tensor([0] * 7 + [1] * 5))
    small = transfer.subsample_per_class(data, 3, seed=1)
    assert torch.bincount(small.tensors[1]).tolist() == [3, 3]
    assert set(small.tensors[0].tolist()) <= set(range(12))
    assert not torch.equal(small.tensors[0], transfer.subsample_per_class(data, 3, seed=2).tensors[0])


# --------------------------------------------------------------------------- the experiment


def test_run_strategy_every_strategy_leaves_the_source_alone(tiny_setup):
    before = copy.deepcopy(tiny_setup.source.state_dict())
    for strategy in transfer.STRATEGIES:
        result = transfer.run_strategy(tiny_setup, strategy, "photos", 2, seed=0)
        assert 0 <= result["accuracy"] <= 1 and result["seconds"] >= 0, (strategy, result)
    assert not _changed(before, tiny_setup.source)
    assert transfer.run_strategy(tiny_setup, "probe: top layer", "digits", 2)["detail"] == "net.global_pool"
    with pytest.raises(ValueError, match="Unknown strategy"):
        transfer.run_strategy(tiny_setup, "fine-tune some", "photos", 2)
    with pytest.raises(ValueError, match="Unknown target"):
        transfer.run_strategy(tiny_setup, "probe: top layer", "cats", 2)


def test_probe_features_are_computed_once(tiny_setup, monkeypatch):
    first = transfer.probe_features(tiny_setup, "digits")
    monkeypatch.setattr(transfer, "stage_features", lambda *a, **k: pytest.fail("features computed twice"))
    assert transfer.probe_features(tiny_setup, "digits") is first
    assert first["net.global_pool"][0].shape == (18, 1280)  # the whole training pool


def test_two_by_two_table_and_its_readings(tiny_setup):
    strategies = ("probe: top layer", "fine-tune last blocks")
    results = transfer.two_by_two_table(dataclasses.replace(tiny_setup, seeds=(0,)), strategies=strategies,
                                        progress=False)
    assert len(results) == 2 * 2 * 2  # sizes x targets x strategies x seeds
    assert results["accuracy"].between(0, 1).all()
    table = transfer.format_table(results)
    assert table.shape == (4, 2) and list(table.columns) == list(strategies)
    assert table.iloc[0, 0].endswith("%")  # one seed: no spread to show
    assert transfer.plot_two_by_two(results, tiny_setup.chance).axes
    depth = transfer.probe_by_depth(tiny_setup, 2)
    assert len(depth) == 2 * 2 * 3 and transfer.plot_depth(depth, depth, tiny_setup.chance).axes


def test_compare_with_lecture_by_hand():
    rows = []
    cells = {("very little", "very similar", "photos"): {"probe: top layer": [0.80, 0.70],
                                                         "fine-tune all": [0.82, 0.84]},
             ("quite a lot", "very different", "digits"): {"fine-tune all": [0.50, 0.52],
                                                           "from scratch": [0.90, 0.92]}}
    for (size, similarity, target), strategies in cells.items():
        for strategy, values in strategies.items():
            rows += [{"data size": size, "similarity": similarity, "target": target, "strategy": strategy,
                      "seed": seed, "accuracy": value} for seed, value in enumerate(values)]
    verdict = transfer.compare_with_lecture(pd.DataFrame(rows)).set_index("target")
    # photos: advice 0.75 (sd 0.071), best 0.83: gap 0.08 > 0.071 -> disagrees; digits: gap 0.40 -> disagrees
    assert verdict.loc["photos", "best"] == "fine-tune all" and not verdict.loc["photos", "agrees"]
    assert verdict.loc["photos", "gap"] == pytest.approx(0.08)
    rows[0]["accuracy"] = 0.90  # advice 0.80 (sd 0.14): the gap 0.03 is within the spread
    assert transfer.compare_with_lecture(pd.DataFrame(rows)).set_index("target").loc["photos", "agrees"]


def test_fixed_features_vs_fine_tuning(tiny_setup):
    demo = transfer.fixed_features_vs_fine_tuning(tiny_setup, "digits", 2, epochs=2)
    assert list(demo["method"].unique()) == ["fine-tuning", "fixed feature extractor"]
    assert demo.groupby("method")["epoch"].apply(list).tolist() == [[1, 2], [1, 2]]
    assert (demo.groupby("method")["seconds"].diff().dropna() >= 0).all()
    assert transfer.plot_per_epoch(demo).axes


def test_small_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    source = transfer.small_cnn_source(("chelsea", "coffee"), 4, steps=2)
    assert source.fc2.out_features == 2 and source.train_seconds is not None
    assert transfer.small_cnn_source(("chelsea", "coffee"), 4, steps=2).train_seconds is None  # from the cache
    target = transfer.crop_task(assets.TEXTURES, 4, 3, size=28, scale=96, sides=(28, 28), gray=True, standardise=True)
    frame = transfer.probe_small_sources({"trained": source, "random": models.MnistCNN()}, target, 2, seeds=(0, 1))
    assert frame.shape == (4, 3) and frame["accuracy"].between(0, 1).all()
    assert transfer.plot_small_sources({"size": frame}, chance=1 / 3).axes


def test_widget_runs_the_strategies(tiny_setup):
    panel = transfer.transfer_widget(tiny_setup, target="digits", strategy="probe: top layer")
    assert "try-it" in panel._dom_classes
    with pytest.raises(ValueError, match="Unknown target"):
        transfer.transfer_widget(tiny_setup, target="cats")


def test_bad_input_gets_a_sentence(tiny_setup):
    with pytest.raises(ValueError, match="DataFrame of two_by_two_table"):
        transfer.format_table(pd.DataFrame({"accuracy": [0.5]}))
    with pytest.raises(ValueError, match="DataFrame of two_by_two_table"):
        transfer.compare_with_lecture([0.5])
    with pytest.raises(ValueError, match="n_per_class"):
        transfer.probe_by_depth(tiny_setup, 1)
    with pytest.raises(ValueError, match="Unknown strategy"):
        transfer.transfer_widget(tiny_setup, strategy="fine-tune some")
    with pytest.raises(TypeError, match="n_train"):
        transfer.digit_task((1, 2), n_train=2.5)
    with pytest.raises(TypeError, match="TransferSetup"):
        transfer.run_strategy({"targets": {}}, "probe: top layer", "photos", 2)
