"""Transfer learning: reuse an ImageNet network's features on new tasks.

Donahue et al. (DeCAF) and Razavian et al. showed that the activations of a
network trained on ImageNet are excellent generic features: a *linear probe*
(a linear classifier on frozen features) already solves many other tasks.
Yosinski et al. measured how transferable each layer is: early layers are
generic, late layers specific to the source task. Between probing and
training from scratch lies *fine-tuning*: start from the source weights and
let the last ``k`` blocks (or all of them) learn the target.

The chapter's source is the course's ImageNet network,
:func:`utils.models.pretrained` (EfficientNet-Lite0). Its targets are real
images available offline: crops of the course's photographs ("which photo is
this crop from?", close to ImageNet) and handwritten digits (far from it);
Imagenette, a 10-class subset of ImageNet, where it can be downloaded.

Shape letters: N samples, D feature dimension, C channels, H, W height and
width of an image.

Blocks
------
:func:`parametrised_blocks` cuts a course model into the units that
:func:`freeze` counts. The *network* is ``model.net`` for the
``Sequential(normalize, net)`` models of :func:`utils.models.pretrained`, and
the model itself otherwise. Its *units* are its direct children in
registration order, an ``nn.Sequential`` child opened one level (EfficientNet's
``blocks`` gives its seven stages ``blocks.0`` … ``blocks.6``). The blocks are
the units that own parameters, a BatchNorm unit joined to the block before it.
Hence EfficientNet-Lite0: ``conv_stem``+``bn1``, the seven stages,
``conv_head``+``bn2``, ``classifier`` (10 blocks); MnistCNN: ``conv1``,
``conv2``, ``fc1``, ``fc2`` (4). The last block is the classification *head*.
When a network's forward pass is the chain of its units (the course's
EfficientNets and MnistCNN), :func:`split_at` cuts it in two at any unit.

References
----------
.. [1] J. Donahue et al., "DeCAF: A deep convolutional activation feature for
   generic visual recognition", ICML 2014.
.. [2] A. S. Razavian et al., "CNN features off-the-shelf: an astounding
   baseline for recognition", CVPR Workshops 2014.
.. [3] J. Yosinski et al., "How transferable are features in deep neural
   networks?", NeurIPS 2014.
"""

from __future__ import annotations

import copy
import math
import tarfile
import time
from dataclasses import dataclass, field

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from . import assets, config, core, models, widgets

__all__ = [
    "parametrised_blocks",
    "freeze",
    "trainable_names",
    "replace_head",
    "split_at",
    "crop_task",
    "digit_task",
    "IMAGENETTE_CLASSES",
    "imagenette_task",
    "subsample_per_class",
    "stage_features",
    "linear_probe",
    "cross_validated_probe",
    "fine_tune",
    "TransferSetup",
    "transfer_setup",
    "probe_features",
    "STRATEGIES",
    "LECTURE_ADVICE",
    "run_strategy",
    "two_by_two_table",
    "format_table",
    "compare_with_lecture",
    "probe_by_depth",
    "small_cnn_source",
    "probe_small_sources",
    "fixed_features_vs_fine_tuning",
    "plot_two_by_two",
    "plot_depth",
    "plot_small_sources",
    "plot_per_epoch",
    "transfer_widget",
]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


# --------------------------------------------------------------------------- blocks and freezing


def _network(model: nn.Module) -> tuple[nn.Module, str]:
    """The network inside a ``pretrained`` wrapper (and its name prefix), else the model."""
    if isinstance(model, nn.Sequential) and hasattr(model, "net"):
        return model.net, "net."
    return model, ""


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's units in registration order (module docstring, "Blocks"), with their full names."""
    net, prefix = _network(core.check_model(model))
    units = [(name, child) for name, child in model.named_children() if child is not net] if prefix else []
    for name, child in net.named_children():
        if isinstance(child, nn.Sequential):
            units += [(f"{prefix}{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            units.append((prefix + name, child))
    return units


def parametrised_blocks(model: nn.Module) -> list[tuple[str, ...]]:
    """The model's blocks in forward order, each a tuple of module names.

    The rule (module docstring, "Blocks"): the network's units that own
    parameters, a BatchNorm unit merged into the block before it. The last
    block is the head.

    Parameters
    ----------
    model : nn.Module
        A course model (:func:`utils.models.pretrained`, :class:`utils.models.MnistCNN`).

    Returns
    -------
    list of tuple of str
        Names as in ``model.named_modules()``.

    Examples
    --------
    >>> parametrised_blocks(models.MnistCNN())
    [('conv1',), ('conv2',), ('fc1',), ('fc2',)]
    >>> blocks = parametrised_blocks(models.untrained("efficientnet_lite0"))
    >>> len(blocks), blocks[0], blocks[-2:]
    (10, ('net.conv_stem', 'net.bn1'), [('net.conv_head', 'net.bn2'), ('net.classifier',)])
    """
    blocks: list[tuple[str, ...]] = []
    for name, module in _units(model):
        if next(module.parameters(), None) is None:
            continue
        if isinstance(module, _NORMS) and blocks:
            blocks[-1] += (name,)  # normalisation belongs to the layer it normalises
        else:
            blocks.append((name,))
    return blocks


def freeze(model: nn.Module, trainable: str | int = "head") -> nn.Module:
    """Freeze a model except its last ``trainable`` blocks (in place).

    Sets ``requires_grad`` of every parameter: True in the last ``k`` blocks
    of :func:`parametrised_blocks`, False elsewhere. Frozen weights receive
    no gradient, so an optimiser cannot change them; this is the set-up of
    fine-tuning "a few layers" [1]_. Unlike most course functions, ``freeze``
    changes the caller's flags on purpose (:func:`fine_tune` restores them).

    Parameters
    ----------
    model : nn.Module
        A course model.
    trainable : {"head", "all"} or int
        ``"head"``: the last block only (same as 1); ``"all"``: every
        parameter; an int ``k`` in 1..len(blocks): the last ``k`` blocks.

    Returns
    -------
    nn.Module
        The same ``model``, for chaining.

    References
    ----------
    .. [1] J. Yosinski et al., "How transferable are features in deep neural
       networks?", NeurIPS 2014.

    Examples
    --------
    >>> model = freeze(models.MnistCNN(), 2)
    >>> trainable_names(model)
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    """
    blocks = parametrised_blocks(model)
    if trainable == "all":
        k = len(blocks)
    elif trainable == "head":
        k = 1
    elif isinstance(trainable, (int, np.integer)) and not isinstance(trainable, bool):
        if not 1 <= trainable <= len(blocks):
            raise ValueError(f"trainable={trainable} blocks is out of range: this model has "
                             f"{len(blocks)} blocks; pass 1..{len(blocks)}, 'head' or 'all'.")
        k = int(trainable)
    else:
        raise ValueError(f"trainable must be 'head', 'all' or a number of blocks, got {trainable!r}.")
    model.requires_grad_(False)
    for block in blocks[len(blocks) - k:]:
        for name in block:
            core.get_module(model, name).requires_grad_(True)
    return model


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad=True``, in order.

    Examples
    --------
    >>> trainable_names(freeze(models.MnistCNN(), "head"))
    ['fc2.weight', 'fc2.bias']
    """
    return [name for name, p in core.check_model(model).named_parameters() if p.requires_grad]


def replace_head(model: nn.Module, num_classes: int, seed: int = 0) -> nn.Module:
    """Swap the head (last block) for a fresh one with ``num_classes`` outputs (in place).

    A ``Linear(D, K)`` head becomes ``Linear(D, num_classes)``, initialised
    with PyTorch's default rule under ``seed``.

    Parameters
    ----------
    model : nn.Module
        A course model whose last block is a ``Linear`` layer.
    num_classes : int
        Classes of the target task, at least 2.
    seed : int, default=0
        Seed of the new head's initialisation.

    Returns
    -------
    nn.Module
        The same ``model``, now ending in ``num_classes`` logits.

    Examples
    --------
    >>> replace_head(models.untrained("efficientnet_lite0"), 3)(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 3])
    """
    core.check_int(num_classes, "num_classes", minimum=2)
    name = parametrised_blocks(model)[-1][0]
    head = core.get_module(model, name)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"The head {name!r} is a {type(head).__name__}; replace_head replaces Linear heads.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(head.in_features, num_classes).to(head.weight.device)
    parent, _, child = name.rpartition(".")
    setattr(core.get_module(model, parent) if parent else model, child, new)
    return model


def split_at(model: nn.Module, layer: str, example: torch.Tensor) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut a network after the unit ``layer``: ``model(x) == tail(front(x))``.

    .. math:: f = \\underbrace{u_L \\circ \\dots \\circ u_{\\ell+1}}_{\\text{tail}}
              \\circ \\underbrace{u_\\ell \\circ \\dots \\circ u_1}_{\\text{front}}

    Both parts hold the model's own modules (no copy), so training the tail
    trains the model. With the front frozen, its output can be computed once
    and cached: fine-tuning the last blocks then costs only the tail, and
    gives the same weights as :func:`fine_tune` of the whole model with those
    blocks trainable (a test checks this). The cut is checked on ``example``.

    Parameters
    ----------
    model : nn.Module
        A network whose forward pass is the chain of its units (module
        docstring, "Blocks"): the course's EfficientNets, MnistCNN.
    layer : str
        The last unit of the front, e.g. ``"net.blocks.4"``.
    example : Tensor (B, C, H, W)
        A few valid inputs for the check.

    Returns
    -------
    (nn.Sequential, nn.Sequential)
        ``(front, tail)``.

    Examples
    --------
    >>> net = models.untrained("efficientnet_lite0")
    >>> front, tail = split_at(net, "net.blocks.4", torch.rand(1, 3, 64, 64))
    >>> front(torch.rand(2, 3, 64, 64)).shape, len(tail)
    (torch.Size([2, 112, 4, 4]), 6)
    """
    units = _units(model)
    names = [name for name, _ in units]
    if layer not in names[:-1]:
        raise ValueError(f"split_at cuts after one of the network's units, except the last; got {layer!r}, "
                         f"expected one of {names[:-1]}.")
    cut = names.index(layer) + 1
    front = nn.Sequential(*[module for _, module in units[:cut]])
    tail = nn.Sequential(*[module for _, module in units[cut:]])
    x = core.check_images(example, "example", model=model)
    with torch.no_grad(), core.inspection_mode(model):
        chained, direct = tail(front(x)), model(x)
    if chained.shape != direct.shape or not torch.allclose(chained, direct, atol=1e-4, rtol=1e-4):
        raise ValueError(f"{type(model).__name__}'s forward pass is not the chain of its units "
                         "(e.g. a residual network or a flatten step between them), so it cannot be cut "
                         "at a unit; split_at works for the course's EfficientNets and MnistCNN.")
    return front, tail


# --------------------------------------------------------------------------- target tasks


def _crops(image: torch.Tensor, n: int, sides: tuple[int, int], size: int,
           rng: np.random.Generator) -> torch.Tensor:
    """``n`` random square crops of ``image``, side drawn from ``sides``, each resized to ``size``."""
    _, h, w = image.shape
    if sides[1] > min(h, w):
        raise ValueError(f"Cannot cut crops of side {sides[1]} from an image part of {h}x{w} pixels; "
                         "use smaller sides or a larger scale.")
    out = []
    for side in rng.integers(sides[0], sides[1] + 1, n):
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = image[:, top:top + side, left:left + side]
        out.append(crop if side == size else assets.resize(crop, (size, size)))
    return torch.stack(out)


def _standardise_contrast(crops: torch.Tensor) -> torch.Tensor:
    """Give each crop mean 0.5 and standard deviation 0.2, so that classes
    differ by their texture, not by their overall brightness."""
    mean = crops.mean(dim=(1, 2, 3), keepdim=True)
    std = crops.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (0.5 + 0.2 * (crops - mean) / std).clamp(0, 1)


def crop_task(names: tuple[str, ...], n_train: int, n_test: int, size: int = 96, scale: int = 384,
              sides: tuple[int, int] | None = None, gray: bool = False, standardise: bool = False,
              seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """A classification task "which image is this crop from?" over course images.

    Each image (:func:`utils.assets.load_image`, shorter side ``scale``) is one
    class. Training crops come from its top half, test crops from its bottom
    half, so no test pixel was seen in training. A crop is a random square of
    side drawn uniformly from ``sides``, resized to ``size`` × ``size``.

    Parameters
    ----------
    names : tuple of str
        At least two image names, e.g. ``assets.PHOTOS``.
    n_train, n_test : int
        Crops per class in each split.
    size : int, default=96
        Side of the returned crops in pixels.
    scale : int, default=384
        Shorter side of each image before cropping.
    sides : (int, int), optional
        Smallest and largest crop side before resizing; default ``(scale // 4, scale // 2)``
        (a quarter to a half of the shorter side, so crops see objects and parts of them).
    gray : bool, default=False
        One-channel crops (for MnistCNN) instead of RGB.
    standardise : bool, default=False
        Give every crop the same mean and spread, so that brightness alone
        cannot tell the classes apart (for textures).
    seed : int, default=0

    Returns
    -------
    (TensorDataset, TensorDataset)
        ``(train, test)``: images (N, 1 or 3, size, size) in [0, 1], labels 0..len(names)-1.

    Examples
    --------
    >>> train, test = crop_task(("chelsea", "coffee"), 4, 2, size=32, scale=128)
    >>> train.tensors[0].shape, test.tensors[1].tolist()
    (torch.Size([8, 3, 32, 32]), [0, 0, 1, 1])
    """
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"names must hold at least two distinct image names, got {names!r}.")
    core.check_int(n_train, "n_train")
    core.check_int(n_test, "n_test")
    sides = sides or (scale // 4, scale // 2)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    for image in (assets.load_image(name, size=scale) for name in names):
        image = image.mean(0, keepdim=True) if gray else image
        half = image.shape[1] // 2
        splits["train"].append(_crops(image[:, :half], n_train, sides, size, rng))
        splits["test"].append(_crops(image[:, half:], n_test, sides, size, rng))
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        images = torch.cat(splits[split])
        out.append(TensorDataset(_standardise_contrast(images) if standardise else images,
                                 torch.arange(len(names)).repeat_interleave(n)))
    return out[0], out[1]


def _first_per_class(labels: torch.Tensor, classes: tuple[int, ...], n: int | None) -> torch.Tensor:
    """Indices of the first ``n`` examples of each class, class by class."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:n] for c in classes])


def digit_task(digits: tuple[int, ...] = tuple(range(10)), n_train: int | None = None,
               n_test: int | None = None, size: int = 28, rgb: bool = False) -> tuple[TensorDataset, TensorDataset]:
    """MNIST restricted to ``digits`` (first ``n_train``/``n_test`` of each), labels renumbered 0..len(digits)-1.

    Parameters
    ----------
    digits : tuple of int, default=(0, ..., 9)
    n_train, n_test : int or None
        Examples per class in each split (None: all).
    size : int, default=28
        Side of the returned images (resized from 28 px).
    rgb : bool, default=False
        Three equal channels, for the course's ImageNet network.

    Returns
    -------
    (TensorDataset, TensorDataset)
        ``(train, test)``: images (N, 1 or 3, size, size) in [0, 1], labels.

    Examples
    --------
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # silences the notice when MNIST falls back
    ...     train, _ = digit_task((3, 7), n_train=2, n_test=1, size=32, rgb=True)
    >>> train.tensors[0].shape, train.tensors[1].tolist()
    (torch.Size([4, 3, 32, 32]), [0, 0, 1, 1])
    """
    digits = tuple(int(d) for d in digits)
    if len(digits) < 2 or len(set(digits)) != len(digits) or any(d not in range(10) for d in digits):
        raise ValueError(f"digits must be at least two distinct integers in 0..9, got {digits!r}.")
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None:
            core.check_int(n, name)
    core.check_int(size, "size", minimum=8)
    out = []
    for split, n in ((True, n_train), (False, n_test)):
        images, labels = assets.mnist(train=split).tensors
        keep = _first_per_class(labels, digits, n)
        images = images[keep] if size == 28 else assets.resize(images[keep], (size, size))
        lookup = torch.full((10,), -1, dtype=torch.long)
        lookup[list(digits)] = torch.arange(len(digits))
        out.append(TensorDataset(images.expand(-1, 3, -1, -1).contiguous() if rgb else images,
                                 lookup[labels[keep]]))
    return out[0], out[1]


IMAGENETTE_CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
                      "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
                      "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
                      "n03888257": "parachute"}
"""Imagenette's ten ImageNet classes (WordNet id: name), in label order."""


def _read_photo(data: bytes, size: int) -> torch.Tensor:
    """A JPEG's bytes -> (3, size, size) in [0, 1]: shorter side resized to ``size``, centre crop."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        image = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    image = assets.resize(image, size)
    top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
    return image[:, top:top + size, left:left + size]


def imagenette_task(n_train: int, n_test: int, size: int = 96,
                    path: str | None = None) -> tuple[TensorDataset, TensorDataset]:
    """Imagenette (10 ImageNet classes, fast.ai) read from its archive: the first ``n_train``/``n_test`` per class.

    The archive comes from :func:`utils.assets.download` (``"imagenette2-160"``,
    pinned MD5), which raises ``OSError`` offline. Files are read from the
    ``.tgz`` without unpacking it; training images from ``train/``, test
    images from ``val/``; each is resized (shorter side ``size``) and
    centre-cropped.

    Parameters
    ----------
    n_train, n_test : int
        Images per class.
    size : int, default=96
    path : str, optional
        The archive (default: download or take it from the cache).

    Returns
    -------
    (TensorDataset, TensorDataset)
        Images (N, 3, size, size), labels 0..9 in the order of ``IMAGENETTE_CLASSES``.

    Examples
    --------
    Not run with the docstrings (a 94 MB download):

    >>> train, test = imagenette_task(20, 10)  # doctest: +SKIP
    """
    core.check_int(n_train, "n_train")
    core.check_int(n_test, "n_test")
    wanted = {"train": n_train, "val": n_test}
    found: dict[tuple[str, int], list[torch.Tensor]] = {}
    order = {wnid: i for i, wnid in enumerate(IMAGENETTE_CLASSES)}
    with tarfile.open(path or assets.download("imagenette2-160")) as tar:
        for member in tar:
            parts = member.name.split("/")  # imagenette2-160/<split>/<wnid>/<file>.JPEG
            if len(parts) != 4 or parts[1] not in wanted or parts[2] not in order or not member.isfile():
                continue
            bucket = found.setdefault((parts[1], order[parts[2]]), [])
            if len(bucket) < wanted[parts[1]]:
                bucket.append(_read_photo(tar.extractfile(member).read(), size))
    out = []
    for split in wanted:
        pairs = [(image, label) for label in range(len(order)) for image in found.get((split, label), [])]
        if not pairs:
            raise ValueError(f"The archive holds no {split}/ images of the Imagenette classes; is it imagenette2-160?")
        out.append(TensorDataset(torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])))
    return out[0], out[1]


def _subsample_indices(labels: torch.Tensor, n_per_class: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    keep = [idx[torch.randperm(len(idx), generator=generator)[:n_per_class]]
            for idx in (torch.nonzero(labels == c).flatten() for c in labels.unique())]
    return torch.cat(keep).sort().values


def subsample_per_class(data: TensorDataset, n_per_class: int, seed: int = 0) -> TensorDataset:
    """``n_per_class`` random examples of every class of ``data`` (fewer if a class has fewer).

    Examples
    --------
    >>> data = TensorDataset(torch.arange(10), torch.tensor([0] * 6 + [1] * 4))
    >>> subsample_per_class(data, 2).tensors[1].tolist()
    [0, 0, 1, 1]
    """
    if not isinstance(data, TensorDataset):
        raise TypeError(f"data must be a TensorDataset, got {type(data).__name__}.")
    keep = _subsample_indices(data.tensors[-1], core.check_int(n_per_class, "n_per_class"), seed)
    return TensorDataset(*(t[keep] for t in data.tensors))


# --------------------------------------------------------------------------- features and probes


def _pool_to(activation: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C g²), averaged over a g × g grid with C g² ≈ dim; (N, D) unchanged."""
    if activation.ndim == 2:
        return activation
    channels, height = activation.shape[1], activation.shape[2]
    grid = max(1, min(height, round(math.sqrt(dim / channels))))
    return F.adaptive_avg_pool2d(activation, grid).flatten(1)


@torch.no_grad()
def stage_features(model: nn.Module, data: Dataset | torch.Tensor, layers: list[str] | tuple[str, ...],
                   dim: int = 2048, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Activations of several named layers in one forward pass, each average-pooled to about ``dim`` numbers.

    .. math:: \\bar\\phi_\\ell(x) = \\operatorname{vec}\\,\\operatorname{avgpool}_{g_\\ell \\times g_\\ell}
              \\big(f_\\ell \\circ \\dots \\circ f_1(x)\\big), \\qquad
              g_\\ell = \\min\\big(H_\\ell, \\operatorname{round}\\sqrt{\\mathtt{dim} / C_\\ell}\\big)

    Pooling each stage to a grid that leaves about the same number of
    features keeps probes at different depths comparable (the protocol of
    Zhang et al.'s linear probes on every layer [1]_): an early stage keeps
    more positions, a late one more channels. Layers that output (N, D) are
    kept as they are. Hooks come from :func:`utils.core.capture`; the model
    runs in :func:`utils.core.inspection_mode`.

    Parameters
    ----------
    model : nn.Module
    data : Dataset of (image, label) or Tensor (N, C, H, W) in [0, 1]
    layers : sequence of str
        Module names, e.g. ``["net.blocks.2", "net.global_pool"]``.
    dim : int, default=2048
    batch_size : int, default=64

    Returns
    -------
    dict of str to Tensor (N, D_ℓ)
        float32 on the CPU, in the order of ``layers``.

    References
    ----------
    .. [1] R. Zhang, P. Isola, A. A. Efros, "Colorful image colorization", ECCV 2016.

    Examples
    --------
    >>> feats = stage_features(models.untrained("efficientnet_lite0"), torch.rand(2, 3, 64, 64),
    ...                        ["net.conv_stem", "net.blocks.5", "net.global_pool"])
    >>> {layer: tuple(f.shape) for layer, f in feats.items()}
    {'net.conv_stem': (2, 2048), 'net.blocks.5': (2, 768), 'net.global_pool': (2, 1280)}
    """
    core.check_model(model)
    core.check_int(dim, "dim")
    for layer in layers:
        core.get_module(model, layer)
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with core.inspection_mode(model):
        for batch in DataLoader(core.as_dataset(data), batch_size=core.check_int(batch_size, "batch_size")):
            x = core.check_images(batch[0], "data", model=model)
            for layer, activation in core.capture(model, x, list(layers)).items():
                chunks[layer].append(_pool_to(activation, dim).float().cpu())
    return {layer: torch.cat(chunks[layer]) for layer in layers}


def linear_probe(train_feats: torch.Tensor | np.ndarray, train_y: torch.Tensor | np.ndarray,
                 test_feats: torch.Tensor | np.ndarray, test_y: torch.Tensor | np.ndarray,
                 C: float = 1.0) -> float:
    """Test accuracy of a logistic regression on frozen features.

    .. math:: \\hat y(x) = \\arg\\max_k\\, (W z + b)_k, \\quad z = (\\phi(x) - \\mu) / \\sigma

    with :math:`\\mu, \\sigma` the training features' mean and standard
    deviation, and :math:`W, b` minimising the L2-regularised cross-entropy
    (scikit-learn's ``LogisticRegression``, inverse strength ``C``). This is
    Razavian et al.'s "off-the-shelf" recipe [1]_ with a linear classifier.

    Parameters
    ----------
    train_feats : (N, D)
    train_y : (N,) integer labels
    test_feats : (M, D)
    test_y : (M,) integer labels
    C : float, default=1.0
        Inverse regularisation strength.

    Returns
    -------
    float
        Fraction of ``test_y`` predicted correctly, in [0, 1].

    References
    ----------
    .. [1] A. S. Razavian et al., "CNN features off-the-shelf: an astounding
       baseline for recognition", CVPR Workshops 2014.

    Examples
    --------
    >>> X = torch.randn(40, 3); y = (X[:, 0] > 0).long()
    >>> linear_probe(X, y, X, y) > 0.9
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    arrays = [np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a)
              for a in (train_feats, train_y, test_feats, test_y)]
    Xtr, ytr, Xte, yte = arrays
    for name, X, y in (("train", Xtr, ytr), ("test", Xte, yte)):
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
            raise ValueError(f"{name} features must be (N, D) with N labels (N,), got shapes "
                             f"{X.shape} and {y.shape}; flatten the features first.")
    if Xtr.shape[1] != Xte.shape[1]:
        raise ValueError(f"train and test features differ in dimension ({Xtr.shape[1]} vs "
                         f"{Xte.shape[1]}); extract both at the same layer.")
    if len(np.unique(ytr)) < 2:
        raise ValueError(f"train_y has a single class {np.unique(ytr)}; a probe needs at least two.")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    # A probe is a small problem: with several BLAS threads on a busy CPU, start-up and
    # contention cost far more than they save (seconds instead of a tenth of a second).
    with threadpool_limits(limits=1):
        probe.fit(Xtr, ytr)
        return float((probe.predict(Xte) == yte).mean())


def cross_validated_probe(feats: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray,
                          folds: int = 3, seed: int = 0) -> float:
    """Mean validation accuracy of :func:`linear_probe` over stratified folds of the training data.

    .. math:: \\mathrm{CV} = \\frac1K \\sum_{k=1}^K \\mathrm{acc}\\big(\\text{probe fit on }
              D \\setminus D_k,\\ D_k\\big)

    It chooses among probes (e.g. at different stages) without looking at the
    test set. ``folds`` is lowered to the size of the smallest class.

    Examples
    --------
    >>> X = torch.randn(30, 3); y = (X[:, 0] > 0).long()
    >>> cross_validated_probe(X, y) > 0.7
    True
    """
    from sklearn.model_selection import StratifiedKFold

    X, y = np.asarray(feats), np.asarray(y)
    folds = min(core.check_int(folds, "folds", minimum=2), int(np.bincount(y).min()))
    if folds < 2:
        raise ValueError("cross_validated_probe needs at least two examples of every class.")
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y)
    return float(np.mean([linear_probe(X[fit], y[fit], X[val], y[val]) for fit, val in splits]))


# --------------------------------------------------------------------------- fine-tuning


def fine_tune(model: nn.Module, train_data: Dataset, test_data: Dataset | None = None,
              trainable: str | int = "head", epochs: int = 5, lr: float = 1e-3,
              batch_size: int = 32, seed: int = 0, progress: bool = True) -> dict[str, list[float]]:
    """Train the last ``trainable`` blocks of ``model`` on the target data (in place).

    .. math:: \\min_{\\theta_{\\text{last } k}} -\\frac1N\\sum_i \\log p_\\theta(y_i \\mid x_i)

    :func:`freeze` chooses the trainable blocks, then the course's one
    training loop :func:`utils.core.train` runs Adam over them; frozen
    BatchNorm layers keep their running statistics, so the frozen blocks stay
    bit-identical. The model's ``requires_grad`` flags and modes are restored
    afterwards; its trainable weights keep what they learned.

    Parameters
    ----------
    model : nn.Module
        A course model whose head already has the target's number of classes
        (:func:`replace_head`).
    train_data, test_data : Dataset of (image (C, H, W), label)
    trainable : {"head", "all"} or int, default="head"
        As in :func:`freeze`.
    epochs : int, default=5
    lr : float, default=1e-3
    batch_size : int, default=32
    seed : int, default=0
        Seed of the batch order.
    progress : bool, default=True

    Returns
    -------
    dict
        :func:`utils.core.train`'s history: loss per step; steps, train
        accuracy, test accuracy (with ``test_data``) and wall time per epoch.

    References
    ----------
    .. [1] J. Yosinski et al., "How transferable are features in deep neural
       networks?", NeurIPS 2014.

    Examples
    --------
    >>> net = replace_head(models.MnistCNN(), 2)
    >>> data = TensorDataset(torch.rand(8, 1, 28, 28), torch.arange(8) % 2)
    >>> history = fine_tune(net, data, trainable=2, epochs=2, progress=False)
    >>> history["step"], trainable_names(net)[:1]
    ([1, 2], ['conv1.weight'])
    """
    with core.restoring(core.check_model(model)):
        freeze(model, trainable)
        return core.train(model, train_data, epochs=epochs, lr=lr, batch_size=batch_size, test_data=test_data,
                          seed=seed, progress=progress, desc=f"fine-tune ({trainable})")


# --------------------------------------------------------------------------- the experiment


@dataclass
class TransferSetup:
    """Everything the chapter's experiments share, and the features they compute once.

    Attributes
    ----------
    source, control : nn.Module
        The trained network and the same architecture with random weights.
    targets : dict of str to (TensorDataset, TensorDataset)
        Each target's pool of training images and its test set.
    similarity : dict of str to str
        ``"very similar"`` or ``"very different"`` (to the source's data) per target.
    sizes : dict of str to int
        Training examples per class, e.g. ``{"very little": 5, "quite a lot": 30}``.
    seeds : tuple of int
        Repetitions: each seed draws its own training subsample, head and batch order.
    probe_layers : tuple of str
        Stages probed, input → output; the last one is the "top layer".
    last_blocks : int
        ``k`` of "fine-tune the last k blocks".
    steps, batch_size : int
        Optimiser steps and batch size of every training strategy: the same
        compute for every strategy and data size (shuffled passes over the
        training examples, cut to ``steps`` batches).
    lr : dict of str to float
        Adam's learning rate per training strategy.
    cache : dict
        Features computed so far (filled by :func:`probe_features`).

    Examples
    --------
    :func:`transfer_setup` builds the chapter's; the tests build a tiny one by hand
    (``tests/test_transfer.py``, fixture ``tiny_setup``). Not run with the docstrings
    (it loads two networks):

    >>> setup = transfer_setup()  # doctest: +SKIP
    >>> setup.cut_layer, setup.chance["digits"]  # doctest: +SKIP
    ('net.blocks.4', 0.1)
    """

    source: nn.Module
    control: nn.Module
    targets: dict[str, tuple[TensorDataset, TensorDataset]]
    similarity: dict[str, str]
    sizes: dict[str, int]
    seeds: tuple[int, ...]
    probe_layers: tuple[str, ...]
    last_blocks: int
    steps: int
    batch_size: int
    lr: dict[str, float]
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def cut_layer(self) -> str:
        """The unit after which "fine-tune the last blocks" trains (the last module of block -k-1)."""
        return parametrised_blocks(self.source)[-self.last_blocks - 1][-1]

    @property
    def chance(self) -> dict[str, float]:
        """Accuracy of guessing, 1 / number of classes, per target."""
        return {name: 1 / len(test.tensors[1].unique()) for name, (_, test) in self.targets.items()}

    def describe(self) -> pd.DataFrame:
        """One row per target: similarity, classes, image size, training pool and test set."""
        rows = {name: {"similarity": self.similarity[name], "classes": len(test.tensors[1].unique()),
                       "image": "×".join(map(str, train.tensors[0].shape[1:])),
                       "training pool": len(train), "test images": len(test)}
                for name, (train, test) in self.targets.items()}
        return pd.DataFrame.from_dict(rows, orient="index")


def transfer_setup(source: nn.Module | None = None, imagenette: bool = True) -> TransferSetup:
    """The chapter's experiment: the course's ImageNet network and real targets, sized by the mode.

    * **photos** ("very similar"): crops of the course's eight photographs
      (``assets.PHOTOS``: a cat, a cup of coffee, an astronaut ...), one class
      per photograph, 80 px; training crops from each photo's top half, test
      crops from its bottom half (:func:`crop_task`).
    * **digits** ("very different"): handwritten MNIST digits, grey, 48 px
      (:func:`digit_task`).
    * **imagenette** ("very similar": ImageNet photos of ten ImageNet classes,
      80 px) when ``imagenette`` is True and the archive can be had
      (:func:`imagenette_task`); offline one line says it is left out.

    Sizes come from :func:`utils.config.pick`: the full mode measures more
    seeds, examples and optimiser steps; the fast mode runs the same code on less.

    Examples
    --------
    Not run with the docstrings (it builds the targets and two networks: seconds):

    >>> setup = transfer_setup()  # doctest: +SKIP
    >>> setup.describe()  # doctest: +SKIP
    """
    source = source if source is not None else models.pretrained()
    n_lot, n_test = config.pick(full=30, fast=10), config.pick(full=15, fast=8)
    pool = n_lot + n_lot // 2  # each seed draws its own subsample from the pool
    targets = {"photos": crop_task(assets.PHOTOS, pool, n_test, size=80, scale=320),
               "digits": digit_task(n_train=pool, n_test=n_test, size=48, rgb=True)}
    similarity = {"photos": "very similar", "digits": "very different"}
    if imagenette:
        try:
            targets["imagenette"] = imagenette_task(pool, n_test, size=80)
            similarity["imagenette"] = "very similar"
        except OSError as err:
            print(f"Imagenette is left out: its archive cannot be had here ({type(err).__name__}).")
    stages = ("net.conv_stem", *(f"net.blocks.{i}" for i in range(7)), "net.global_pool")
    return TransferSetup(
        source=source, control=models.untrained(source.arch), targets=targets, similarity=similarity,
        sizes={"very little": 5, "quite a lot": n_lot}, seeds=tuple(range(config.pick(full=3, fast=1))),
        probe_layers=stages, last_blocks=4, steps=config.pick(full=16, fast=3), batch_size=config.pick(full=16, fast=8),
        lr={"fine-tune last blocks": 1e-3, "fine-tune all": 1e-3, "from scratch": 1e-3})


def _check_target(setup: TransferSetup, target: str) -> tuple[TensorDataset, TensorDataset]:
    if not isinstance(setup, TransferSetup):
        raise TypeError(f"setup must be a TransferSetup (from transfer_setup()), got {type(setup).__name__}.")
    if target not in setup.targets:
        raise ValueError(f"Unknown target {target!r}; this setup has {list(setup.targets)}.")
    return setup.targets[target]


def probe_features(setup: TransferSetup, target: str,
                   network: str = "source") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pooled features of every probe layer for a target's training pool and test set, computed once.

    :func:`stage_features` of ``setup.source`` (``network="source"``) or of
    the random-weight ``setup.control`` (``"control"``); later calls return
    the cached tensors.

    Parameters
    ----------
    setup : TransferSetup
    target : str
        A key of ``setup.targets``.
    network : {"source", "control"}, default="source"

    Returns
    -------
    dict of str to (Tensor (N, D), Tensor (M, D))
        Per layer: (training-pool features, test features).

    References
    ----------
    .. [1] J. Donahue et al., "DeCAF: A deep convolutional activation feature
       for generic visual recognition", ICML 2014.

    Examples
    --------
    Not run with the docstrings (it needs a setup: seconds):

    >>> feats = probe_features(transfer_setup(), "digits")  # doctest: +SKIP
    >>> feats["net.global_pool"][0].shape  # doctest: +SKIP
    torch.Size([45, 1280])
    """
    train, test = _check_target(setup, target)
    if network not in ("source", "control"):
        raise ValueError(f"network must be 'source' or 'control', got {network!r}.")
    key = ("probe", network, target)
    if key not in setup.cache:
        model = setup.source if network == "source" else setup.control
        pair = [stage_features(model, data, setup.probe_layers) for data in (train, test)]
        setup.cache[key] = {layer: (pair[0][layer], pair[1][layer]) for layer in setup.probe_layers}
    return setup.cache[key]


def _cut_features(setup: TransferSetup, target: str, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of the frozen front (up to ``layer``) for a target's pool and test set, computed once."""
    key = ("cut", layer, target)
    if key not in setup.cache:
        setup.cache[key] = tuple(core.layer_features(setup.source, data, layer) for data in setup.targets[target])
    return setup.cache[key]


STRATEGIES = ("probe: top layer", "probe: best earlier stage", "fine-tune last blocks",
              "fine-tune all", "from scratch")

LECTURE_ADVICE = {("very little", "very similar"): "probe: top layer",
                  ("very little", "very different"): "probe: best earlier stage",
                  ("quite a lot", "very similar"): "fine-tune last blocks",
                  ("quite a lot", "very different"): "fine-tune all"}
"""The lecture's 2×2 table: (data size, similarity) -> the strategy it recommends."""


def _budget(idx: torch.Tensor, steps: int, batch_size: int, seed: int) -> list[int]:
    """Exactly ``steps`` batches of training examples: shuffled passes over ``idx``, cut to steps × batch_size.

    Every training strategy gets the same compute whatever the data size: with
    few examples they are seen many times, with many examples fewer times.
    """
    generator = torch.Generator().manual_seed(seed)
    passes = [idx[torch.randperm(len(idx), generator=generator)]
              for _ in range(math.ceil(steps * batch_size / len(idx)))]
    return torch.cat(passes)[:steps * batch_size].tolist()


def _probe(setup: TransferSetup, target: str, idx: torch.Tensor, seed: int, network: str = "source",
           layers: tuple[str, ...] | None = None) -> tuple[float, str]:
    """Linear probe on the layer (among ``layers``) that cross-validates best on the training subsample."""
    feats = probe_features(setup, target, network)
    ytr, yte = (data.tensors[1] for data in setup.targets[target])
    layers = layers or setup.probe_layers[-1:]
    best = layers[0] if len(layers) == 1 else max(
        layers, key=lambda layer: cross_validated_probe(feats[layer][0][idx], ytr[idx], seed=seed))
    return linear_probe(feats[best][0][idx], ytr[idx], feats[best][1], yte), best


def _train_after(setup: TransferSetup, target: str, idx: torch.Tensor, seed: int, layer: str) -> tuple[float, str]:
    """Fine-tune every unit after ``layer`` on the cached outputs of the frozen front."""
    train, test = setup.targets[target]
    model = replace_head(copy.deepcopy(setup.source), len(test.tensors[1].unique()), seed)
    _, tail = split_at(model, layer, train.tensors[0][:2])
    fronts = _cut_features(setup, target, layer)
    batches = _budget(idx, setup.steps, setup.batch_size, seed)
    fine_tune(tail, TensorDataset(fronts[0][batches], train.tensors[1][batches]), trainable="all", epochs=1,
              lr=setup.lr["fine-tune last blocks"], batch_size=setup.batch_size, seed=seed, progress=False)
    return core.accuracy(tail, TensorDataset(fronts[1], test.tensors[1])), f"trained after {layer}"


def _train_whole(setup: TransferSetup, target: str, idx: torch.Tensor, seed: int, scratch: bool) -> tuple[float, str]:
    """Fine-tune every weight of the source, or of a random network of the same architecture."""
    train, test = setup.targets[target]
    start = models.untrained(setup.source.arch, seed) if scratch else copy.deepcopy(setup.source)
    model = replace_head(start, len(test.tensors[1].unique()), seed)
    strategy = "from scratch" if scratch else "fine-tune all"
    fine_tune(model, Subset(train, _budget(idx, setup.steps, setup.batch_size, seed)), trainable="all", epochs=1,
              lr=setup.lr[strategy], batch_size=setup.batch_size, seed=seed, progress=False)
    return core.accuracy(model, test), f"{models.num_parameters(model):,} weights trained"


def run_strategy(setup: TransferSetup, strategy: str, target: str, n_per_class: int,
                 seed: int = 0) -> dict[str, float | str]:
    """Test accuracy of one transfer ``strategy`` on ``n_per_class`` training examples of a target.

    * ``"probe: top layer"`` — :func:`linear_probe` on the source's top layer;
    * ``"probe: best earlier stage"`` — the same at the earlier stage whose
      probe scores best in :func:`cross_validated_probe` on the training
      examples (the test set is not looked at);
    * ``"fine-tune last blocks"`` — a new head, then the last
      ``setup.last_blocks`` blocks trained (:func:`fine_tune`) on the cached
      output of the frozen front (:func:`split_at`);
    * ``"fine-tune all"`` — every weight, starting from the source;
    * ``"from scratch"`` — every weight, starting from random weights.

    The seed draws the training subsample (:func:`subsample_per_class`), the
    head and the batch order. The caller's source is never changed.

    Returns
    -------
    dict
        ``{"accuracy": test accuracy, "seconds": wall time, "detail": the
        layer probed or what was trained}``.

    Examples
    --------
    Not run with the docstrings (the set-up takes seconds):

    >>> run_strategy(transfer_setup(), "probe: top layer", "photos", 5)  # doctest: +SKIP
    {'accuracy': 0.7..., 'seconds': ..., 'detail': 'net.global_pool'}
    """
    train, _ = _check_target(setup, target)
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; expected one of {STRATEGIES}.")
    idx = _subsample_indices(train.tensors[1], core.check_int(n_per_class, "n_per_class", minimum=2), seed)
    start = time.perf_counter()
    if strategy == "probe: top layer":
        accuracy, detail = _probe(setup, target, idx, seed)
    elif strategy == "probe: best earlier stage":
        accuracy, detail = _probe(setup, target, idx, seed, layers=setup.probe_layers[:-1])
    elif strategy == "fine-tune last blocks":
        accuracy, detail = _train_after(setup, target, idx, seed, setup.cut_layer)
    else:
        accuracy, detail = _train_whole(setup, target, idx, seed, scratch=strategy == "from scratch")
    return {"accuracy": accuracy, "seconds": time.perf_counter() - start, "detail": detail}


def two_by_two_table(setup: TransferSetup, strategies: tuple[str, ...] = STRATEGIES,
                     targets: tuple[str, ...] | None = None, progress: bool = True) -> pd.DataFrame:
    """Measure the lecture's 2×2 table: every strategy in every cell (data size × similarity), every seed.

    Parameters
    ----------
    setup : TransferSetup
    strategies : tuple of str, default=STRATEGIES
    targets : tuple of str, optional
        Default: every target of the setup.
    progress : bool, default=True

    Returns
    -------
    pandas.DataFrame
        One row per run: ``data size``, ``similarity``, ``target``,
        ``strategy``, ``seed``, ``accuracy``, ``seconds``, ``detail``.

    References
    ----------
    .. [1] J. Yosinski et al., "How transferable are features in deep neural
       networks?", NeurIPS 2014.

    Examples
    --------
    Not run with the docstrings (minutes in full mode):

    >>> table = two_by_two_table(transfer_setup())  # doctest: +SKIP
    """
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"Unknown strategies {sorted(unknown)}; expected names from {STRATEGIES}.")
    targets = targets or tuple(setup.targets)
    runs = [(size, target, strategy, seed) for size in setup.sizes for target in targets
            for strategy in strategies for seed in setup.seeds]
    rows = []
    for size, target, strategy, seed in core.progress_bar(runs, progress=progress, desc="2x2 table"):
        result = run_strategy(setup, strategy, target, setup.sizes[size], seed)
        rows.append({"data size": size, "similarity": setup.similarity[target], "target": target,
                     "strategy": strategy, "seed": seed, **result})
    return pd.DataFrame(rows)


_RESULT_COLUMNS = ["data size", "similarity", "target", "strategy", "seed", "accuracy"]


def _cell_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each (data size, similarity, target, strategy)."""
    if not isinstance(results, pd.DataFrame) or not set(_RESULT_COLUMNS) <= set(results.columns):
        got = list(results.columns) if isinstance(results, pd.DataFrame) else type(results).__name__
        raise ValueError(f"results must be the DataFrame of two_by_two_table, with columns {_RESULT_COLUMNS}; "
                         f"got {got}.")
    keys = ["data size", "similarity", "target", "strategy"]
    stats = results.groupby(keys, sort=False)["accuracy"].agg(["mean", "std"]).fillna(0.0)
    return stats.reset_index()


def format_table(results: pd.DataFrame) -> pd.DataFrame:
    """The 2×2 table for reading: one row per cell, one column per strategy, "mean ± sd" over seeds.

    Examples
    --------
    >>> runs = pd.DataFrame({"data size": ["very little"] * 2, "similarity": ["very similar"] * 2,
    ...                      "target": ["photos"] * 2, "strategy": ["probe: top layer"] * 2,
    ...                      "seed": [0, 1], "accuracy": [0.7, 0.8]})
    >>> format_table(runs).iloc[0, 0]
    '75% ± 7'
    """
    stats = _cell_statistics(results)
    runs = results.groupby(["data size", "target", "strategy"], sort=False)["seed"].count().max()
    stats["text"] = [f"{m:.0%} ± {100 * s:.0f}" if runs > 1 else f"{m:.0%}"
                     for m, s in zip(stats["mean"], stats["std"], strict=True)]
    cells = ["data size", "similarity", "target"]
    table = stats.pivot(index=cells, columns="strategy", values="text")
    order = pd.MultiIndex.from_frame(stats[cells].drop_duplicates())
    return table.reindex(order)[[s for s in STRATEGIES if s in table.columns]]


def compare_with_lecture(results: pd.DataFrame) -> pd.DataFrame:
    """Cell by cell: the lecture's advice, the measured best strategy, and whether they agree.

    .. math:: \\text{agrees} \\iff \\max_s \\bar a_s - \\bar a_{\\text{advice}}
              \\le \\max(\\sigma_{\\text{best}}, \\sigma_{\\text{advice}})

    The advice *agrees* with the measurement when its mean accuracy over seeds
    :math:`\\bar a` is the best, or below the best by no more than the larger of
    the two strategies' seed standard deviations :math:`\\sigma` (a difference
    the repetitions cannot resolve).

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``advice``, ``advice accuracy``, ``best``,
        ``best accuracy``, ``gap`` (best minus advice), ``agrees``.

    Examples
    --------
    >>> runs = pd.DataFrame({"data size": ["very little"] * 2, "similarity": ["very similar"] * 2,
    ...                      "target": ["photos"] * 2, "strategy": ["probe: top layer", "fine-tune all"],
    ...                      "seed": [0, 0], "accuracy": [0.8, 0.6]})
    >>> compare_with_lecture(runs)[["advice", "best", "agrees"]].values.tolist()
    [['probe: top layer', 'probe: top layer', True]]
    """
    stats = _cell_statistics(results)
    rows = []
    for (size, similarity, target), cell in stats.groupby(["data size", "similarity", "target"], sort=False):
        cell = cell.set_index("strategy")
        advice, best = LECTURE_ADVICE[(size, similarity)], cell["mean"].idxmax()
        gap = cell.loc[best, "mean"] - cell.loc[advice, "mean"]
        rows.append({"data size": size, "similarity": similarity, "target": target, "advice": advice,
                     "advice accuracy": cell.loc[advice, "mean"], "best": best,
                     "best accuracy": cell.loc[best, "mean"], "gap": gap,
                     "agrees": bool(gap <= max(cell.loc[best, "std"], cell.loc[advice, "std"]))})
    return pd.DataFrame(rows)


def probe_by_depth(setup: TransferSetup, n_per_class: int, network: str = "source",
                   targets: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Linear-probe test accuracy at every probe layer, for every target and seed.

    Yosinski et al.'s "generic to specific" curve: features of early layers
    serve any task; late ones fit the source task. With ``network="control"``
    the same probes read the random-weight network.

    Parameters
    ----------
    setup : TransferSetup
    n_per_class : int
        Training examples per class (a new subsample per seed).
    network : {"source", "control"}, default="source"
    targets : tuple of str, optional
        Default: every target of the setup.

    Returns
    -------
    pandas.DataFrame
        One row per (target, layer, seed): ``target``, ``layer``, ``seed``, ``accuracy``.

    References
    ----------
    .. [1] J. Yosinski et al., "How transferable are features in deep neural
       networks?", NeurIPS 2014.

    Examples
    --------
    Not run with the docstrings (it needs a setup: seconds):

    >>> depth = probe_by_depth(transfer_setup(), 30)  # doctest: +SKIP
    """
    core.check_int(n_per_class, "n_per_class", minimum=2)
    rows = []
    for target in targets or tuple(setup.targets):
        train, _ = _check_target(setup, target)
        for seed in setup.seeds:
            idx = _subsample_indices(train.tensors[1], n_per_class, seed)
            for layer in setup.probe_layers:
                accuracy, _ = _probe(setup, target, idx, seed, network, layers=(layer,))
                rows.append({"target": target, "layer": layer, "seed": seed, "accuracy": accuracy})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the source's data: small CNNs


def small_cnn_source(names: tuple[str, ...], n_per_class: int, steps: int = 150, seed: int = 0) -> models.MnistCNN:
    """A small CNN trained to tell 28×28 grey crops of the course images ``names`` apart; cached.

    The source of the chapter's questions about the source's data: each image
    is one class (as in Dosovitskiy et al.'s exemplar networks [1]_), with
    ``n_per_class`` training crops (contrast standardised, :func:`crop_task`),
    trained for ``steps`` Adam steps of 64 crops by :func:`utils.core.train`
    and cached by :func:`utils.core.cached_model`.

    References
    ----------
    .. [1] A. Dosovitskiy et al., "Discriminative unsupervised feature learning
       with convolutional neural networks", NeurIPS 2014.

    Examples
    --------
    Not run with the docstrings (it writes to the model cache):

    >>> small_cnn_source(("chelsea", "coffee"), 10, steps=2)(torch.rand(1, 1, 28, 28)).shape  # doctest: +SKIP
    torch.Size([1, 2])
    """
    core.check_int(n_per_class, "n_per_class")
    core.check_int(steps, "steps")

    def build() -> models.MnistCNN:
        torch.manual_seed(seed)
        return models.MnistCNN(num_classes=len(names))

    def fit(model: models.MnistCNN) -> None:
        data, _ = crop_task(names, n_per_class, 1, size=28, scale=96, sides=(28, 28), gray=True,
                            standardise=True, seed=seed)
        batches = _budget(torch.arange(len(data)), steps, 64, seed)
        core.train(model, Subset(data, batches), batch_size=64, seed=seed, progress=False)

    settings = {"names": list(names), "n_per_class": n_per_class, "steps": steps, "seed": seed, "version": 2}
    return core.cached_model("crop_cnn", settings, build, fit)


def probe_small_sources(sources: dict[str, nn.Module], target: tuple[TensorDataset, TensorDataset],
                        n_per_class: int, seeds: tuple[int, ...] = (0, 1, 2), layer: str = "relu3") -> pd.DataFrame:
    """Linear-probe accuracy on a target at ``layer`` of each source network, for several seeds.

    .. math:: \\mathrm{acc}(s) = \\mathrm{probe}\\big(\\phi^{(s)}_{\\mathtt{layer}}(X_{\\text{train}}),
              \\phi^{(s)}_{\\mathtt{layer}}(X_{\\text{test}})\\big) \\quad \\text{for each source } s

    Parameters
    ----------
    sources : dict of str to nn.Module
        Labelled source networks (e.g. from :func:`small_cnn_source`, and a random control).
    target : (TensorDataset, TensorDataset)
        The target's training pool and test set.
    n_per_class : int
        Training examples per class of the probe (a new subsample per seed).
    seeds : tuple of int, default=(0, 1, 2)
    layer : str, default="relu3"
        The probed layer (MnistCNN's top hidden layer).

    Returns
    -------
    pandas.DataFrame
        One row per (source, seed): ``source``, ``seed``, ``accuracy``.

    References
    ----------
    .. [1] M. Huh, P. Agrawal, A. A. Efros, "What makes ImageNet good for
       transfer learning?", arXiv:1608.08614, 2016.

    Examples
    --------
    >>> target = crop_task(assets.TEXTURES, 4, 4, size=28, scale=96, sides=(28, 28), gray=True)
    >>> probe_small_sources({"random": models.MnistCNN()}, target, 2, seeds=(0,)).shape
    (1, 3)
    """
    core.check_int(n_per_class, "n_per_class", minimum=2)
    train, test = target
    rows = []
    for label, source in sources.items():
        feats = [core.layer_features(source, data, layer, flatten=True) for data in (train, test)]
        for seed in seeds:
            idx = _subsample_indices(train.tensors[1], n_per_class, seed)
            accuracy = linear_probe(feats[0][idx], train.tensors[1][idx], feats[1], test.tensors[1])
            rows.append({"source": label, "seed": seed, "accuracy": accuracy})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the seed demo


def fixed_features_vs_fine_tuning(setup: TransferSetup, target: str, n_per_class: int, epochs: int,
                                  seed: int = 0) -> pd.DataFrame:
    """The PyTorch transfer-learning tutorial's comparison: a fixed feature extractor vs fine-tuning.

    * **fine-tuning**: a new head, then every weight trained by :func:`fine_tune`;
    * **fixed feature extractor**: the network is frozen; its top-layer
      features are computed once (timed) and a new linear head is trained on
      them by :func:`utils.core.train`.

    Both are scored on the test set after every epoch.

    Parameters
    ----------
    setup : TransferSetup
    target : str
    n_per_class : int
        Training examples per class.
    epochs : int
    seed : int, default=0

    Returns
    -------
    pandas.DataFrame
        One row per (method, epoch): ``method``, ``epoch``, ``seconds``
        (wall time since the start, feature extraction included), ``test accuracy``.

    References
    ----------
    .. [1] S. Chilamkurthy, "Transfer learning for computer vision tutorial",
       PyTorch tutorials, 2017.

    Examples
    --------
    Not run with the docstrings (it fine-tunes a network: seconds to minutes):

    >>> demo = fixed_features_vs_fine_tuning(transfer_setup(), "digits", 30, epochs=5)  # doctest: +SKIP
    """
    train, test = _check_target(setup, target)
    core.check_int(epochs, "epochs")
    subset = subsample_per_class(train, n_per_class, seed)
    classes = len(test.tensors[1].unique())
    tuned = replace_head(copy.deepcopy(setup.source), classes, seed)
    history = fine_tune(tuned, subset, test, trainable="all", epochs=epochs, lr=setup.lr["fine-tune all"],
                        batch_size=setup.batch_size, seed=seed, progress=False)
    start = time.perf_counter()
    top = setup.probe_layers[-1]
    feats = [core.layer_features(setup.source, data, top, flatten=True) for data in (subset, test)]
    extraction = time.perf_counter() - start
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(feats[0].shape[1], classes)
    fixed = core.train(head, TensorDataset(feats[0], subset.tensors[1]), epochs=epochs, lr=1e-3,
                       batch_size=setup.batch_size, test_data=TensorDataset(feats[1], test.tensors[1]),
                       seed=seed, progress=False)
    rows = []
    for method, hist, offset in (("fine-tuning", history, 0.0), ("fixed feature extractor", fixed, extraction)):
        rows += [{"method": method, "epoch": e + 1, "seconds": offset + s, "test accuracy": a}
                 for e, (s, a) in enumerate(zip(hist["seconds"], hist["test_acc"], strict=True))]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


def _short(layer: str) -> str:
    return layer.removeprefix("net.").replace("blocks.", "stage ").replace("global_pool", "top (pool)")


def plot_two_by_two(results: pd.DataFrame, chance: dict[str, float] | None = None) -> Figure:
    """The measured 2×2 table: one panel per cell, one bar per strategy (mean over seeds, dots = seeds).

    Rows are data sizes, columns targets; the lecture's advice for the cell is
    the orange bar; the dotted line is chance (``chance[target]``).

    Examples
    --------
    >>> runs = pd.DataFrame({"data size": "very little", "similarity": "very similar", "target": "photos",
    ...                      "strategy": list(STRATEGIES), "seed": 0, "accuracy": [0.7, 0.6, 0.8, 0.6, 0.2]})
    >>> len(plot_two_by_two(runs, {"photos": 0.125}).axes)
    1
    """
    stats = _cell_statistics(results)
    sizes, targets = list(dict.fromkeys(stats["data size"])), list(dict.fromkeys(stats["target"]))
    fig, axes = plt.subplots(len(sizes), len(targets), figsize=(5.2 * len(targets), 2.3 * len(sizes) + 0.6),
                             sharex=True, squeeze=False)
    for (i, size), (j, target) in ((a, b) for a in enumerate(sizes) for b in enumerate(targets)):
        ax, cell = axes[i, j], stats[(stats["data size"] == size) & (stats["target"] == target)]
        advice = LECTURE_ADVICE[(size, cell["similarity"].iloc[0])]
        y = np.arange(len(cell))[::-1]
        colours = ["tab:orange" if s == advice else "tab:blue" for s in cell["strategy"]]
        ax.barh(y, cell["mean"], color=colours, alpha=0.8)
        runs = results[(results["data size"] == size) & (results["target"] == target)]
        for yy, strategy in zip(y, cell["strategy"], strict=True):
            seeds = runs.loc[runs["strategy"] == strategy, "accuracy"]
            ax.plot(seeds, [yy] * len(seeds), "o", mfc="white", mec="black", ms=5)
        for yy, m in zip(y, cell["mean"], strict=True):
            ax.text(0.01, yy, f"{m:.0%}", va="center", fontsize=8, color="white", fontweight="bold")
        if chance:
            ax.axvline(chance[target], color="gray", ls=":", lw=1.2)
        ax.set_yticks(y, cell["strategy"] if j == 0 else [""] * len(y), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_title(f"{size} data · {cell['similarity'].iloc[0]} ({target})", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("test accuracy (bar: mean over seeds; circles: each seed)")
    fig.suptitle("The 2×2 table measured (orange: the lecture's advice for the cell; dotted: chance)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_depth(trained: pd.DataFrame, control: pd.DataFrame | None = None,
               chance: dict[str, float] | None = None) -> Figure:
    """Linear-probe accuracy against depth, one panel per target (:func:`probe_by_depth`):
    the trained network and the random-weight control, mean ± sd over seeds.

    Examples
    --------
    >>> depth = pd.DataFrame({"target": "digits", "layer": ["net.blocks.3", "net.global_pool"],
    ...                       "seed": 0, "accuracy": [0.9, 0.8]})
    >>> len(plot_depth(depth, chance={"digits": 0.1}).axes)
    1
    """
    targets = list(dict.fromkeys(trained["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.8 * len(targets), 3.9), sharey=True, squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        layers = list(dict.fromkeys(trained["layer"]))
        x = {layer: i for i, layer in enumerate(layers)}
        for frame, label, style in ((trained, "probe, ImageNet-trained", "-o"),
                                    (control, "probe, random weights (control)", "--s")):
            if frame is None:
                continue
            stats = frame[frame["target"] == target].groupby("layer", sort=False)["accuracy"].agg(["mean", "std"])
            xs, spread = [x[layer] for layer in stats.index], stats["std"].fillna(0)
            ax.plot(xs, stats["mean"], style, label=label, ms=4)
            ax.fill_between(xs, stats["mean"] - spread, stats["mean"] + spread, alpha=0.2)
        if chance:
            ax.axhline(chance[target], color="gray", ls=":", label="chance")
        ax.set_xticks(range(len(layers)), [_short(layer) for layer in layers], rotation=40, ha="right", fontsize=8)
        ax.set(title=target, xlabel="probed stage (input → output)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("linear-probe test accuracy")
    axes[0, -1].legend(loc="lower right", fontsize=8)
    fig.suptitle("More generic → more specific: a linear probe at each stage", fontsize=11)
    fig.tight_layout()
    return fig


def plot_small_sources(frames: dict[str, pd.DataFrame], chance: float | None = None) -> Figure:
    """One panel per experiment on small sources: probe accuracy per source (mean, dots = seeds).

    Examples
    --------
    >>> frame = pd.DataFrame({"source": ["random", "trained"], "seed": 0, "accuracy": [0.4, 0.7]})
    >>> len(plot_small_sources({"source size": frame}, chance=1 / 3).axes)
    1
    """
    fig, axes = plt.subplots(1, len(frames), figsize=(4.6 * len(frames), 3.4), sharey=True, squeeze=False)
    for ax, (title, frame) in zip(axes[0], frames.items(), strict=True):
        means = frame.groupby("source", sort=False)["accuracy"].mean()
        x = np.arange(len(means))
        ax.bar(x, means, color="tab:blue", alpha=0.75)
        for i, source in enumerate(means.index):
            values = frame.loc[frame["source"] == source, "accuracy"]
            ax.plot([i] * len(values), values, "ko", ms=3.5, label="one seed" if i == 0 else None)
            ax.text(i, 0.02, f"{means[source]:.0%}", ha="center", color="white", fontweight="bold", fontsize=9)
        if chance is not None:
            ax.axhline(chance, color="gray", ls=":", label="chance")
        ax.set_xticks(x, means.index, fontsize=9)
        ax.set(title=title, ylim=(0, 1))
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("probe accuracy on the target\n(bar: mean over seeds)")
    axes[0, -1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_per_epoch(demo: pd.DataFrame) -> Figure:
    """Test accuracy against wall time, one point per epoch, per method of :func:`fixed_features_vs_fine_tuning`.

    Examples
    --------
    >>> demo = pd.DataFrame({"method": ["fine-tuning"] * 2 + ["fixed feature extractor"] * 2,
    ...                      "epoch": [1, 2, 1, 2], "seconds": [3.0, 6.0, 0.8, 0.9],
    ...                      "test accuracy": [0.6, 0.8, 0.7, 0.75]})
    >>> plot_per_epoch(demo).axes[0].get_xlabel()
    'wall time (s), one point per epoch'
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for method, rows in demo.groupby("method", sort=False):
        ax.plot(rows["seconds"], rows["test accuracy"], "-o", ms=4, label=method)
        last = rows.iloc[-1]
        ax.annotate(f"epoch {last['epoch']}: {last['test accuracy']:.0%}", (last["seconds"], last["test accuracy"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xlim(left=0)
    ax.set(xlabel="wall time (s), one point per epoch", ylabel="test accuracy", ylim=(0, 1.02),
           title="Fine-tuning vs a fixed feature extractor")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- Try it


def transfer_widget(setup: TransferSetup, target: str = "photos", strategy: str = "probe: top layer",
                    seed: int = 0) -> ipywidgets.VBox:
    """Try it: pick a target and a strategy; see test accuracy against the number of training examples.

    Each point is one :func:`run_strategy` call on ``n`` examples per class
    (n from 2 to the setup's "quite a lot"); the lecture's two sizes are marked.
    The probes answer in a second (features are cached); the training
    strategies take longer, hence the Run button.

    Examples
    --------
    Not run with the docstrings (it needs a setup: seconds):

    >>> transfer_widget(transfer_setup(), target="digits", strategy="probe: best earlier stage")  # doctest: +SKIP
    """
    _check_target(setup, target)
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; expected one of {STRATEGIES}.")
    counts = sorted({2, setup.sizes["very little"], setup.sizes["quite a lot"] // 2, setup.sizes["quite a lot"]})

    def draw(target: str, strategy: str) -> Figure:
        accuracies = [run_strategy(setup, strategy, target, n, seed)["accuracy"] for n in counts]
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.plot(counts, accuracies, "-o", label=strategy)
        ax.axhline(1 / len(setup.targets[target][1].tensors[1].unique()), color="gray", ls=":", label="chance")
        for size, n in setup.sizes.items():
            ax.axvline(n, color="tab:orange", alpha=0.4)
            ax.text(n, 1.0, f"{size} ", color="tab:orange", fontsize=8, rotation=90, ha="right", va="top")
        ax.set(xlabel="training examples per class", ylabel="test accuracy", ylim=(0, 1.02),
               title=f"{strategy} on {target} ({setup.similarity[target]})")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        return fig

    return widgets.try_it(
        draw, run_button=True,
        target=ipywidgets.Dropdown(options=list(setup.targets), value=target, description="target"),
        strategy=ipywidgets.Dropdown(options=list(STRATEGIES), value=strategy, description="strategy"),
    )
