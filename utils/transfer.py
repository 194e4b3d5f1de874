"""Transfer learning: reuse a trained network's features on a new task.

Donahue et al. (DeCAF) and Razavian et al. showed that the activations of a
network trained on ImageNet are excellent generic features: a *linear probe*
(a linear classifier on frozen features) already solves many other tasks.
Yosinski et al. measured how transferable each layer is: early layers are
generic, late layers specific to the source task. Between probing and
training from scratch lies *fine-tuning*: start from the source weights and
let the last ``k`` blocks (or all of them) learn the target.

Shape letters: N samples, D feature dimension, C channels, H, W height and
width of an image.

Blocks
------
:func:`parametrised_blocks` cuts any course model into the units that
:func:`freeze` counts. The *network* is ``model.net`` for the
``Sequential(normalize, net)`` models of :func:`utils.models.pretrained`, and
the model itself otherwise. Its blocks are, in forward (registration) order,

* every direct child that owns parameters, except that
* an ``nn.Sequential`` child is opened and its own parametrised children are
  blocks (VGG's ``features``/``classifier`` give one block per conv or linear
  layer; ResNet's ``layer1`` gives the residual blocks ``layer1.0``,
  ``layer1.1``), and
* a BatchNorm layer joins the block just before it (ResNet's ``conv1`` and
  ``bn1`` form one block).

Hence MnistCNN: conv1, conv2, fc1, fc2 (4 blocks); ResNet-18: conv1+bn1,
eight residual blocks, fc (10); VGG-16: 13 convs and 3 linears (16);
AlexNet: 8; SqueezeNet 1.1: the first conv, eight Fire modules and the final
1×1 conv (10). The last block is the classification *head*.

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

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from . import assets, config, core, models, widgets

__all__ = [
    "parametrised_blocks",
    "freeze",
    "trainable_names",
    "replace_head",
    "reinitialise",
    "extract_features",
    "linear_probe",
    "fine_tune",
    "digit_task",
    "crop_task",
    "subsample_per_class",
    "STRATEGIES",
    "run_strategy",
    "transfer_table",
    "probe_by_depth",
    "plot_transfer_table",
]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


# --------------------------------------------------------------------------- blocks and freezing


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if next(model.parameters(), None) is None:
        raise ValueError("model has no parameters, so it has nothing to freeze or train.")


def _network(model: nn.Module) -> tuple[nn.Module, str]:
    """The network inside a ``pretrained`` wrapper (and its name prefix), else the model."""
    if isinstance(model, nn.Sequential) and hasattr(model, "net"):
        return model.net, "net."
    return model, ""


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def parametrised_blocks(model: nn.Module) -> list[tuple[str, ...]]:
    """The model's blocks in forward order, each a tuple of module names.

    The rule (module docstring, "Blocks"): parametrised children of the
    network, ``nn.Sequential`` children opened one level, a BatchNorm merged
    into the block before it. The last block is the head.

    Parameters
    ----------
    model : nn.Module
        A course model (:func:`utils.models.pretrained`, :class:`utils.models.MnistCNN`).

    Returns
    -------
    list of tuple of str
        Names as in ``model.named_modules()``, e.g. ``[("conv1",), ("conv2",),
        ("fc1",), ("fc2",)]`` for MnistCNN.

    Examples
    --------
    >>> parametrised_blocks(models.pretrained("resnet18"))[:2]
    [('net.conv1', 'net.bn1'), ('net.layer1.0',)]
    """
    _check_model(model)
    net, prefix = _network(model)
    units: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if isinstance(child, nn.Sequential):
            units += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            units.append((name, child))
    blocks: list[tuple[str, ...]] = []
    for name, module in units:
        if not _owns_parameters(module):
            continue
        if isinstance(module, _NORMS) and blocks:
            blocks[-1] += (prefix + name,)  # normalisation belongs to the layer it normalises
        else:
            blocks.append((prefix + name,))
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
    modules = dict(model.named_modules())
    for block in blocks[len(blocks) - k:]:
        for name in block:
            modules[name].requires_grad_(True)
    return model


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad=True``, in order."""
    _check_model(model)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def replace_head(model: nn.Module, num_classes: int, seed: int = 0) -> nn.Module:
    """Swap the head (last block) for a fresh one with ``num_classes`` outputs (in place).

    A ``Linear(D, K)`` head becomes ``Linear(D, num_classes)``; SqueezeNet's
    ``Conv2d(512, K, 1)`` head becomes ``Conv2d(512, num_classes, 1)``. The new
    head is initialised with PyTorch's default rule under ``seed``.

    Parameters
    ----------
    model : nn.Module
        A course model.
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
    >>> replace_head(models.MnistCNN(), 3)(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 3])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
    name = parametrised_blocks(model)[-1][0]
    head = model.get_submodule(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(head, nn.Linear):
            new = nn.Linear(head.in_features, num_classes)
        elif isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1):
            new = nn.Conv2d(head.in_channels, num_classes, 1)
        else:
            raise TypeError(f"The head {name!r} is a {type(head).__name__}; replace_head knows "
                            "Linear heads and SqueezeNet's 1x1 Conv2d head.")
    _set_module(model, name, new.to(head.weight.device))
    return model


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every weight with PyTorch's default initialisation (in place).

    Calls ``reset_parameters`` of every layer (BatchNorm also resets its
    running statistics), under ``seed``: the "train from scratch" baseline
    with exactly the source architecture.
    """
    _check_model(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return model


# --------------------------------------------------------------------------- features and probes


def _as_dataset(data: Dataset | torch.Tensor, argname: str = "data") -> Dataset:
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"{argname} as a tensor must be a batch of images (N, C, H, W), "
                             f"got shape {tuple(data.shape)}.")
        data = TensorDataset(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"{argname} must be a Dataset or an (N, C, H, W) tensor, got {type(data).__name__}.")
    if len(data) == 0:
        raise ValueError(f"{argname} is empty.")
    return data


@torch.no_grad()
def extract_features(model: nn.Module, data: Dataset | torch.Tensor, layer: str,
                     batch_size: int = 128) -> torch.Tensor:
    """Flattened activations of the module named ``layer`` for every input.

    .. math:: \\phi_\\ell(x) = \\operatorname{vec}\\big(f_\\ell \\circ \\dots \\circ f_1(x)\\big)

    A forward hook on ``dict(model.named_modules())[layer]`` records its
    output; the model runs in eval mode without gradients and gets its mode
    back. These are DeCAF-style "off-the-shelf" features [1]_.

    Parameters
    ----------
    model : nn.Module
        Any course model.
    data : Dataset of (image, label) or tensor (N, C, H, W)
        Images in [0, 1].
    layer : str
        A name from ``model.named_modules()``, e.g. ``"relu3"`` or ``"net.layer3"``.
    batch_size : int, default=128

    Returns
    -------
    torch.Tensor
        (N, D) float32 on the CPU, D = the number of activations of ``layer``.

    References
    ----------
    .. [1] J. Donahue et al., "DeCAF: A deep convolutional activation feature
       for generic visual recognition", ICML 2014.

    Examples
    --------
    >>> extract_features(models.MnistCNN(), torch.rand(5, 1, 28, 28), "pool1").shape
    torch.Size([5, 3136])
    """
    _check_model(model)
    data = _as_dataset(data)
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        known = [n for n in modules if n][:12]
        raise ValueError(f"No module named {layer!r} in this model; names look like {known}.")
    outputs: list[torch.Tensor] = []
    hook = modules[layer].register_forward_hook(lambda m, i, out: outputs.append(out.flatten(1).cpu()))
    was_training, dev = model.training, next(model.parameters()).device
    try:
        model.eval()
        for batch in DataLoader(data, batch_size=batch_size):
            model(batch[0].to(dev))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(outputs).float()


def _labels(data: Dataset) -> torch.Tensor:
    return torch.cat([batch[1] for batch in DataLoader(data, batch_size=1024)])


def linear_probe(train_feats: torch.Tensor | np.ndarray, train_y: torch.Tensor | np.ndarray,
                 test_feats: torch.Tensor | np.ndarray, test_y: torch.Tensor | np.ndarray,
                 C: float = 1.0) -> float:
    """Test accuracy of a logistic regression on frozen features.

    Features are standardised with the training set's mean and standard
    deviation, then a multinomial logistic regression (L2 penalty ``1/C``)
    is fitted by scikit-learn:

    .. math:: \\hat y = \\arg\\max_k\\, (W z + b)_k, \\quad z = (\\phi(x) - \\mu) / \\sigma

    Parameters
    ----------
    train_feats : (N, D) tensor or array
    train_y : (N,) integer labels
    test_feats : (M, D) tensor or array
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
                             f"{X.shape} and {y.shape}; flatten features with extract_features.")
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


# --------------------------------------------------------------------------- fine-tuning


def _freeze_frozen_norms(model: nn.Module) -> None:
    """Put BatchNorm layers whose affine parameters are frozen in eval mode.

    In train mode a BatchNorm layer overwrites its running mean and variance
    with every batch even when its weights are frozen; eval mode keeps the
    source statistics, so a frozen block stays exactly the source block.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def fine_tune(model: nn.Module, train_data: Dataset, test_data: Dataset | None = None,
              trainable: str | int = "head", epochs: int = 5, lr: float = 1e-3,
              batch_size: int = 32, seed: int = 0, progress: bool = True) -> dict[str, list[float]]:
    """Train the last ``trainable`` blocks of ``model`` on the target data (in place).

    Minimises the cross-entropy :math:`-\\frac1N\\sum_i \\log p_\\theta(y_i\\mid x_i)`
    with Adam over the unfrozen parameters only (:func:`freeze`); frozen
    BatchNorm layers stay in eval mode, so frozen blocks stay bit-identical,
    running statistics included. The model's ``requires_grad`` flags and
    mode are restored afterwards; its trainable weights keep what they learned.

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
        Show a progress bar.

    Returns
    -------
    dict
        ``{"loss": [per step], "step": [steps done at each epoch's end],
        "train_acc": [per epoch], "test_acc": [per epoch, if test_data]}``.

    References
    ----------
    .. [1] J. Yosinski et al., "How transferable are features in deep neural
       networks?", NeurIPS 2014.

    Examples
    --------
    >>> history = fine_tune(replace_head(model, 5), train, test, trainable=2, epochs=3)  # doctest: +SKIP
    """
    _check_model(model)
    train_data = _as_dataset(train_data, "train_data")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    flags = [p.requires_grad for p in model.parameters()]
    was_training, dev = model.training, next(model.parameters()).device
    try:
        freeze(model, trainable)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        loader = DataLoader(train_data, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        history: dict[str, list[float]] = {"loss": [], "step": [], "train_acc": []}
        if test_data is not None:
            history["test_acc"] = []
        for _ in tqdm(range(epochs), desc=f"fine-tune ({trainable})", disable=not progress, leave=False):
            model.train()
            _freeze_frozen_norms(model)
            correct = 0
            for x, y in loader:
                logits = model(x.to(dev))
                loss = nn.functional.cross_entropy(logits, y.to(dev))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                history["loss"].append(loss.item())
                correct += (logits.argmax(1).cpu() == y).sum().item()
            history["step"].append(len(history["loss"]))
            history["train_acc"].append(correct / len(train_data))
            if test_data is not None:
                history["test_acc"].append(core.accuracy(model, test_data))
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return history


# --------------------------------------------------------------------------- target tasks


def digit_task(digits: tuple[int, ...], n_train: int | None = None) -> tuple[TensorDataset, TensorDataset]:
    """MNIST restricted to ``digits``, labels renumbered 0..len(digits)-1.

    Returns ``(train, test)`` TensorDatasets of (N, 1, 28, 28) images in [0, 1];
    ``digit_task((5, 6, 7, 8, 9))`` is the "similar" target of a source trained
    on 0–4.
    """
    digits = tuple(int(d) for d in digits)
    if len(digits) < 2 or len(set(digits)) != len(digits) or any(d not in range(10) for d in digits):
        raise ValueError(f"digits must be at least two distinct integers in 0..9, got {digits!r}.")
    out = []
    for split in (True, False):
        images, labels = assets.mnist(train=split, n=n_train if split else None).tensors
        keep = torch.isin(labels, torch.tensor(digits))
        lookup = torch.full((10,), -1, dtype=torch.long)
        lookup[list(digits)] = torch.arange(len(digits))
        out.append(TensorDataset(images[keep], lookup[labels[keep]]))
    return out[0], out[1]


def _random_crops(image: torch.Tensor, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    _, h, w = image.shape
    if h < size or w < size:
        raise ValueError(f"Cannot cut {size}x{size} crops from an image of size {h}x{w}; "
                         "use a smaller size or a larger scale.")
    tops, lefts = rng.integers(0, h - size + 1, n), rng.integers(0, w - size + 1, n)
    return torch.stack([image[:, t:t + size, s:s + size] for t, s in zip(tops, lefts, strict=True)])


def _standardise_contrast(crops: torch.Tensor) -> torch.Tensor:
    """Give each crop mean 0.5 and standard deviation 0.2, so that classes
    differ by their texture, not by their overall brightness."""
    mean = crops.mean(dim=(1, 2, 3), keepdim=True)
    std = crops.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (0.5 + 0.2 * (crops - mean) / std).clamp(0, 1)


def crop_task(names: tuple[str, ...], n_train: int, n_test: int, size: int = 28, scale: int = 128,
              gray: bool = True, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """A classification task "which image is this crop from?" over course images.

    Each image (:func:`utils.assets.load_image`, shorter side resized to
    ``scale``) is one class. Training crops come from its top half, test crops
    from its bottom half, so no test pixel was seen in training. Crops have
    their contrast standardised (same mean and spread), so brightness alone
    cannot tell the classes apart.

    Parameters
    ----------
    names : tuple of str
        At least two image names, e.g. ``("brick", "grass", "gravel")``.
    n_train, n_test : int
        Crops per class in each split.
    size : int, default=28
        Side of a square crop in pixels.
    scale : int, default=128
        Shorter side of each image before cropping.
    gray : bool, default=True
        One-channel crops (for MnistCNN) instead of RGB.
    seed : int, default=0

    Returns
    -------
    (TensorDataset, TensorDataset)
        ``(train, test)``: images (N, 1 or 3, size, size) in [0, 1], labels 0..len(names)-1.
    """
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"names must hold at least two distinct image names, got {names!r}.")
    if min(n_train, n_test) < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}.")
    rng = np.random.default_rng(seed)
    splits: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    for image in (assets.load_image(name, size=scale) for name in names):
        image = image.mean(0, keepdim=True) if gray else image
        half = image.shape[1] // 2
        splits["train"].append(_random_crops(image[:, :half], n_train, size, rng))
        splits["test"].append(_random_crops(image[:, half:], n_test, size, rng))
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        labels = torch.arange(len(names)).repeat_interleave(n)
        out.append(TensorDataset(_standardise_contrast(torch.cat(splits[split])), labels))
    return out[0], out[1]


def subsample_per_class(data: TensorDataset, n_per_class: int, seed: int = 0) -> TensorDataset:
    """``n_per_class`` random examples of every class of ``data`` (fewer if a class has fewer)."""
    if not isinstance(data, TensorDataset):
        raise TypeError(f"data must be a TensorDataset, got {type(data).__name__}.")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be positive, got {n_per_class}.")
    images, labels = data.tensors
    generator = torch.Generator().manual_seed(seed)
    keep = [idx[torch.randperm(len(idx), generator=generator)[:n_per_class]]
            for idx in (torch.nonzero(labels == c).flatten() for c in labels.unique())]
    keep = torch.cat(keep).sort().values
    return TensorDataset(images[keep], labels[keep])


# --------------------------------------------------------------------------- the 2x2 table

STRATEGIES = ("probe: top layer", "probe: early layer", "fine-tune last blocks",
              "fine-tune all", "from scratch")


def run_strategy(strategy: str, source: nn.Module, train: TensorDataset, test: TensorDataset,
                 top_layer: str, early_layer: str, few_blocks: int = 2, steps: int = 100,
                 lr: float = 1e-3, batch_size: int = 32, seed: int = 0) -> float:
    """Test accuracy of one transfer ``strategy`` (one of :data:`STRATEGIES`).

    Probes fit :func:`linear_probe` on :func:`extract_features` of the frozen
    ``source``; the three training strategies copy ``source`` (the caller's
    model is never changed), give it a new head (:func:`replace_head`) and
    :func:`fine_tune` the last ``few_blocks`` blocks, all blocks, or all blocks
    after :func:`reinitialise` ("from scratch"), for about ``steps`` Adam steps.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; expected one of {STRATEGIES}.")
    if strategy.startswith("probe"):
        layer = top_layer if strategy == "probe: top layer" else early_layer
        return linear_probe(extract_features(source, train, layer), _labels(train),
                            extract_features(source, test, layer), _labels(test))
    model = copy.deepcopy(source)
    if strategy == "from scratch":
        reinitialise(model, seed)
    replace_head(model, int(_labels(train).max()) + 1, seed)
    trainable = {"fine-tune last blocks": few_blocks}.get(strategy, "all")
    epochs = max(1, math.ceil(steps / math.ceil(len(train) / batch_size)))
    fine_tune(model, train, None, trainable, epochs, lr, batch_size, seed, progress=False)
    return core.accuracy(model, test)


def transfer_table(source: nn.Module, targets: dict[str, tuple[TensorDataset, TensorDataset]],
                   sizes: dict[str, int], top_layer: str, early_layer: str,
                   strategies: tuple[str, ...] = STRATEGIES, progress: bool = True,
                   **kwargs) -> pd.DataFrame:
    """Measure the lecture's 2×2 table: data size × similarity, for every strategy.

    For each target (e.g. ``{"very similar": ..., "very different": ...}``)
    and each size (e.g. ``{"very little": 10, "quite a lot": 200}`` examples
    per class, drawn by :func:`subsample_per_class`), every strategy of
    :func:`run_strategy` is trained and scored on the target's full test set.

    Parameters
    ----------
    source : nn.Module
        The network trained on the source task.
    targets : dict of str to (train, test) TensorDatasets
    sizes : dict of str to int
        Training examples per class.
    top_layer, early_layer : str
        Module names probed by the two probe strategies.
    strategies : tuple of str, default=STRATEGIES
    progress : bool, default=True
    **kwargs
        Passed to :func:`run_strategy` (``few_blocks``, ``steps``, ``lr``, ``seed``).

    Returns
    -------
    pandas.DataFrame
        Index ``(data size, similarity)``, one column per strategy, test accuracies.

    References
    ----------
    .. [1] J. Yosinski et al., "How transferable are features in deep neural
       networks?", NeurIPS 2014.
    """
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"Unknown strategies {sorted(unknown)}; expected names from {STRATEGIES}.")
    cells = [(size, target) for size in sizes for target in targets]
    rows = {}
    for size, target in tqdm(cells, desc="2x2 table", disable=not progress):
        train, test = targets[target]
        small = subsample_per_class(train, sizes[size], seed=kwargs.get("seed", 0))
        rows[(size, target)] = {s: run_strategy(s, source, small, test, top_layer, early_layer, **kwargs)
                                for s in strategies}
    table = pd.DataFrame.from_dict(rows, orient="index")[list(strategies)]
    table.index = pd.MultiIndex.from_tuples(table.index, names=["data size", "similarity"])
    return table


def probe_by_depth(source: nn.Module, targets: dict[str, tuple[Dataset, Dataset]],
                   layers: list[str]) -> pd.DataFrame:
    """Linear-probe accuracy at each layer in ``layers`` for each target.

    Yosinski et al.'s "generic to specific" curve: features of early layers
    serve any task; late ones fit the source task.

    Returns
    -------
    pandas.DataFrame
        Index the layer names (in the given order), one column per target.
    """
    result = {}
    for target, (train, test) in targets.items():
        ytr, yte = _labels(train), _labels(test)
        result[target] = [linear_probe(extract_features(source, train, layer), ytr,
                                       extract_features(source, test, layer), yte) for layer in layers]
    return pd.DataFrame(result, index=pd.Index(layers, name="layer"))


def plot_transfer_table(table: pd.DataFrame) -> Figure:
    """Heat map of :func:`transfer_table`'s result, and the 2×2 layout with the winner per cell.

    Left: strategies × cells, colour = test accuracy, the best strategy of
    each cell boxed. Right: the lecture's 2×2 table (data size × similarity),
    each cell naming its winning strategy and accuracy.
    """
    if not isinstance(table, pd.DataFrame) or table.index.nlevels != 2:
        raise TypeError("table must be the DataFrame returned by transfer_table.")
    sizes, targets = list(table.index.unique(0)), list(table.index.unique(1))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    values = table.to_numpy().T  # strategies x cells
    ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(table)), [f"{s}\n{t}" for s, t in table.index], fontsize=8)
    ax.set_yticks(range(len(table.columns)), table.columns, fontsize=9)
    for j, best in enumerate(values.argmax(0)):
        ax.add_patch(plt.Rectangle((j - 0.5, best - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
        for i, v in enumerate(values[:, j]):
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", color="white" if v < 0.6 else "black")
    ax.set_title("test accuracy per strategy (red box: best)")
    grid = np.array([[table.loc[(s, t)].max() for t in targets] for s in sizes])
    ax2.imshow(grid, cmap="viridis", vmin=0, vmax=1)
    for i, s in enumerate(sizes):
        for j, t in enumerate(targets):
            row = table.loc[(s, t)]
            ax2.text(j, i, f"{row.idxmax()}\n{row.max():.0%}", ha="center", va="center", fontsize=9,
                     color="white" if row.max() < 0.6 else "black")
    ax2.set_xticks(range(len(targets)), [f"{t}\nto source" for t in targets])
    ax2.set_yticks(range(len(sizes)), [f"{s}\ndata" for s in sizes])
    ax2.set_title("the 2×2 table: winner per cell")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- Try it


def transfer_widget(n_per_class: int = 20, strategy: str = "fine-tune last 2 blocks",
                    target: str = "digits 5-9 (similar)", epochs: int | None = None) -> ipywidgets.VBox:
    """Chapter 3: pick a target-set size and a strategy, see the learning curve.

    The source is the course's MNIST CNN trained on digits 0-4; the target is
    digits 5-9 (similar) or texture crops (different). Each run copies the
    source, replaces its head and trains with :func:`utils.fine_tune`,
    recording the test accuracy after every epoch.
    """
    source = models.mnist_cnn(digits=(0, 1, 2, 3, 4))
    tasks = {
        "digits 5-9 (similar)": digit_task((5, 6, 7, 8, 9)),
        "textures (different)": crop_task(("brick", "grass", "gravel"), n_train=200, n_test=100),
    }
    plans = {"fine-tune head": ("head", False), "fine-tune last 2 blocks": (2, False),
             "fine-tune all": ("all", False), "from scratch": ("all", True)}
    epochs = epochs or config.pick(full=15, fast=4)

    def draw(n_per_class: int, strategy: str, target: str) -> Figure:
        train, test = tasks[target]
        small = subsample_per_class(train, n_per_class)
        test = subsample_per_class(test, 60)
        trainable, scratch = plans[strategy]
        model = copy.deepcopy(source)
        if scratch:
            reinitialise(model)
        replace_head(model, int(train.tensors[1].max()) + 1)
        history = fine_tune(model, small, test, trainable, epochs=epochs, progress=False)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(history["step"], history["test_acc"], marker="o", label="test")
        ax.plot(history["step"], history["train_acc"], marker=".", ls="--", label="train")
        ax.axhline(1 / len(train.tensors[1].unique()), color="gray", ls=":", label="chance")
        ax.set(xlabel="optimiser step", ylabel="accuracy", ylim=(0, 1.02),
               title=f"{strategy}, {n_per_class}/class, {target}: test {history['test_acc'][-1]:.0%}")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig

    return widgets.try_it(
        draw, run_button=True,
        n_per_class=ipywidgets.SelectionSlider(options=[5, 10, 20, 50, 100, 200], value=n_per_class,
                                            description="examples/class"),
        strategy=ipywidgets.Dropdown(options=list(plans), value=strategy, description="strategy"),
        target=ipywidgets.Dropdown(options=list(tasks), value=target, description="target"),
    )
