"""Network mechanics shared by every chapter, each written once.

* **Checks** — :func:`check_model`, :func:`check_images`, :func:`check_int`,
  :func:`check_number`, :func:`check_labels`: one set of rules and messages, so
  a student's plausible mistake (a wrong shape, 0–255 pixels, NaN, a batch where
  one image is expected) ends in a sentence that says what was expected.
* **Layers by name** — :func:`get_module`, :func:`layer_names`; activations of
  named layers through forward hooks (:func:`capture`, :func:`layer_features`),
  so every function works on the course's EfficientNets (``"net.blocks.3"``),
  any torchvision classifier (``"net.layer3"``, ``"net.features.28"``) and the
  course's own CNNs (``"conv2"``), never through ``.features[i]``.
* **Modes** — :func:`inspection_mode` (eval, frozen parameters, out-of-place
  activations) and :func:`restoring` (give a model its modes and flags back).
* **Training** — one loop, :func:`train`, with the loss passed in; :func:`predict`
  and :func:`accuracy`; :func:`progress_bar`, the one progress-bar rule.
* **Course-trained models** — :func:`cached_model` trains once, saves with
  :func:`atomic_save` and reloads with ``torch.load(weights_only=True)``.
* **Measurements** — :func:`receptive_field` of a named layer.
* **Image prior** — :func:`total_variation`, used by feature inversion
  (chapter 4) and style transfer (chapter 5).

Shape letters: ``B`` images, ``C`` channels, ``H, W`` height and width.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from . import config

__all__ = [
    "check_model",
    "model_device",
    "check_images",
    "check_int",
    "check_number",
    "check_labels",
    "as_dataset",
    "get_module",
    "layer_names",
    "capture",
    "layer_features",
    "inspection_mode",
    "restoring",
    "progress_bar",
    "cross_entropy_step",
    "train",
    "predict",
    "accuracy",
    "atomic_save",
    "cached_model",
    "receptive_field",
    "total_variation",
]


# --------------------------------------------------------------------------- checks


def check_model(model: object) -> nn.Module:
    """Refuse anything that is not a ``torch.nn.Module`` with parameters.

    Examples
    --------
    >>> check_model("resnet18")
    Traceback (most recent call last):
    ...
    TypeError: model must be a torch.nn.Module (e.g. models.pretrained()), got str.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. models.pretrained()), got {type(model).__name__}.")
    if next(model.parameters(), None) is None:
        raise ValueError(f"model ({type(model).__name__}) has no parameters; pass a network.")
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(check_model(model).parameters()).device


def _input_channels(model: nn.Module) -> int | None:
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    return first.in_channels if isinstance(first, nn.Conv2d) else None


def check_images(
    x: object,
    name: str = "x",
    model: nn.Module | None = None,
    single: bool = False,
    channels: int | None = None,
) -> torch.Tensor:
    """Validate an image or a batch of [0, 1] pixels; return a detached (B, C, H, W) float copy.

    Parameters
    ----------
    x : Tensor (C, H, W) or (B, C, H, W)
        Pixels in [0, 1] (course images are never normalised by hand: the
        model's first layer does it).
    name : str, default="x"
        The argument's name, for the messages.
    model : nn.Module, optional
        If given, the copy is moved to its device and the channel count is
        checked against its first convolution.
    single : bool, default=False
        Refuse a batch of more than one image (for methods that explain one image).
    channels : int, optional
        Required channel count (e.g. 3 for RGB).

    Examples
    --------
    >>> check_images(torch.rand(3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    >>> check_images(torch.full((3, 8, 8), 255.0))
    Traceback (most recent call last):
    ...
    ValueError: x must hold pixels in [0, 1], got values in [255, 255]; divide 8-bit images by 255
    (assets.load_image does).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor image of shape (C, H, W) or (B, C, H, W), "
                        f"got {type(x).__name__}.")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (B, C, H, W), got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype}; "
                        "use x.float() / 255 for 8-bit images.")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}).")
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN pixels; check the step that produced it "
                         "(a learning rate that is too large is the usual cause).")
    if x.min() < -1e-6 or x.max() > 1 + 1e-6:
        raise ValueError(f"{name} must hold pixels in [0, 1], got values in [{x.min().item():.3g}, "
                         f"{x.max().item():.3g}]; divide 8-bit images by 255 (assets.load_image does).")
    batch = x if x.ndim == 4 else x[None]
    if single and len(batch) != 1:
        raise ValueError(f"{name} must be one image (C, H, W) or a batch of one, got a batch of "
                         f"{len(batch)} (shape {tuple(x.shape)}); pass {name}[i] for image i.")
    expected = channels if channels is not None else (_input_channels(model) if model is not None else None)
    if expected is not None and batch.shape[1] != expected:
        hint = " (a grayscale or RGBA image? use assets.load_image, which gives RGB)" if expected == 3 else ""
        raise ValueError(f"{name} has {batch.shape[1]} channels (shape {tuple(x.shape)}) but {expected} "
                         f"are expected{hint}.")
    out = batch.detach().clone().float()
    return out.to(model_device(model)) if model is not None else out


def check_int(value: object, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Refuse anything but an integer in ``[minimum, maximum]``; return it as an ``int``.

    Examples
    --------
    >>> check_int(3, "steps")
    3
    >>> check_int(0.5, "steps")
    Traceback (most recent call last):
    ...
    TypeError: steps must be an integer, got float 0.5.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be an integer {bound}, got {value}.")
    return int(value)


def check_number(
    value: object, name: str, low: float = 0.0, high: float = math.inf, low_open: bool = False
) -> float:
    """Refuse anything but a finite real number in ``[low, high]`` (``(low, high]`` if ``low_open``).

    Examples
    --------
    >>> check_number(0.03, "eps", high=1.0)
    0.03
    >>> check_number(-1, "style_weight")
    Traceback (most recent call last):
    ...
    ValueError: style_weight must be a number in [0, inf], got -1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if math.isnan(value) or value < low or value > high or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value:g}.")
    return value


def check_labels(y: object, batch: int, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    """Refuse labels that are not ``batch`` integers (in ``0..num_classes-1`` when given).

    Examples
    --------
    >>> check_labels(torch.tensor([3, 1]), batch=2, num_classes=10)
    tensor([3, 1])
    """
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor of class indices, got "
                        f"{type(y).__name__}{' of ' + str(y.dtype) if isinstance(y, torch.Tensor) else ''}.")
    y = y.reshape(-1).long()
    if len(y) != batch:
        raise ValueError(f"{name} has {len(y)} labels for a batch of {batch} images; give one per image.")
    if num_classes is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} holds a class outside 0..{num_classes - 1}: {y.tolist()[:8]}.")
    return y


def as_dataset(data: object, name: str = "data") -> Dataset:
    """A ``Dataset`` as it is, or a batch tensor (N, C, H, W) wrapped in a ``TensorDataset``."""
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"{name} as a tensor must be a batch of images (N, C, H, W), "
                             f"got shape {tuple(data.shape)}.")
        data = TensorDataset(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"{name} must be a torch Dataset (e.g. TensorDataset) or an (N, C, H, W) tensor, "
                        f"got {type(data).__name__}.")
    if len(data) == 0:
        raise ValueError(f"{name} is empty.")
    return data


# --------------------------------------------------------------------------- layers by name


def get_module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer`` (as in ``model.named_modules()``).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> get_module(net, "1")
    ReLU()
    >>> get_module(net, "relu")
    Traceback (most recent call last):
    ...
    ValueError: The model has no module named 'relu'; choose one of ['0', '1'] (see core.layer_names(model)).
    """
    check_model(model)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name such as 'conv2' or 'net.blocks.3', "
                        f"got {type(layer).__name__} {layer!r}.")
    named = dict(model.named_modules())
    if layer not in named or layer == "":
        names = [n for n in named if n]
        hint = names if len(names) <= 12 else names[:6] + ["..."] + names[-6:]
        raise ValueError(f"The model has no module named {layer!r}; choose one of {hint} "
                         f"(see core.layer_names(model)).")
    return named[layer]


def layer_names(model: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...] | None = None) -> list[str]:
    """Names of the model's submodules in definition order, optionally only those of type ``kind``.

    Examples
    --------
    >>> layer_names(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)), nn.Conv2d)
    ['0', '2']
    """
    check_model(model)
    return [n for n, m in model.named_modules() if n and (kind is None or isinstance(m, kind))]


class _Stop(Exception):
    """Raised by a hook once every wanted activation exists: no work is done after it."""


def capture(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the modules named ``layers`` on input ``x``, by forward hooks.

    The forward pass stops as soon as the last of them is computed, so asking
    for an early layer costs only the network up to it. Gradients flow: the
    returned tensors are part of the graph when ``x`` requires grad. A module
    called twice keeps its first output.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, C, H, W)
        Input (already validated by the caller).
    layers : sequence of str
        Module names.

    Returns
    -------
    dict of str to Tensor

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> {k: tuple(v.shape) for k, v in capture(net, torch.rand(1, 3, 8, 8), ["0", "1"]).items()}
    {'0': (1, 4, 6, 6), '1': (1, 4, 6, 6)}
    """
    modules = {layer: get_module(model, layer) for layer in layers}
    if not modules:
        raise ValueError("layers is empty; name at least one module.")
    out: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def store(_module, _inputs, output):
            out.setdefault(name, output)
            if len(out) == len(modules):
                raise _Stop

        return store

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if name not in out]
    if missing:
        raise ValueError(f"Modules {missing} were not called in the model's forward pass; "
                         "choose layers that the forward pass uses.")
    return out


@torch.no_grad()
def layer_features(
    model: nn.Module, data: torch.Tensor | Dataset, layer: str, batch_size: int = 128, flatten: bool = False
) -> torch.Tensor:
    """Activations of the module named ``layer`` for every input, computed batch by batch.

    .. math:: \\phi_\\ell(x) = f_\\ell \\circ \\dots \\circ f_1(x)

    The model runs in :func:`inspection_mode` (eval, no gradients), and the
    forward pass stops at ``layer``. These are DeCAF's "off-the-shelf"
    features [1]_ when ``layer`` is the penultimate one.

    Parameters
    ----------
    model : nn.Module
    data : Tensor (N, C, H, W) or (C, H, W) in [0, 1], or a Dataset of (image, label)
    layer : str
        A module name, e.g. ``"net.global_pool"`` or ``"relu3"``.
    batch_size : int, default=128
    flatten : bool, default=False
        Return (N, D) instead of the layer's own shape.

    Returns
    -------
    Tensor (N, ...)
        float32, on the CPU.

    References
    ----------
    .. [1] J. Donahue et al., "DeCAF: A deep convolutional activation feature
       for generic visual recognition", ICML 2014.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    >>> layer_features(net, torch.rand(5, 3, 8, 8), "1").shape
    torch.Size([5, 4, 6, 6])
    """
    check_model(model)
    get_module(model, layer)
    check_int(batch_size, "batch_size")
    if isinstance(data, torch.Tensor):
        data = check_images(data, "data", model=model).cpu()
    chunks = []
    with inspection_mode(model):
        for batch in DataLoader(as_dataset(data), batch_size=batch_size):
            x = check_images(batch[0], "data", model=model)
            chunks.append(capture(model, x, [layer])[layer].float().cpu())
    features = torch.cat(chunks)
    return features.flatten(1) if flatten else features


# --------------------------------------------------------------------------- modes


@contextlib.contextmanager
def restoring(model: nn.Module) -> Iterator[nn.Module]:
    """Give ``model`` back every module's train/eval mode and every parameter's
    ``requires_grad`` flag when the block ends, whatever happened inside.

    Examples
    --------
    >>> net = nn.Linear(2, 2).train()
    >>> with restoring(net):
    ...     _ = net.eval().requires_grad_(False)
    >>> net.training, net.weight.requires_grad
    (True, True)
    """
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode
        for param, flag in flags.items():
            param.requires_grad_(flag)


@contextlib.contextmanager
def inspection_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, frozen parameters and out-of-place activations; all restored afterwards.

    Freezing the parameters makes autograd build the graph for the input only.
    In-place activations (torchvision's ``ReLU(inplace=True)``) would overwrite
    an output that a hook has captured; switching them off changes no value.
    """
    inplace = {m: m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)}
    with restoring(model):
        try:
            model.eval().requires_grad_(False)
            for module in inplace:
                module.inplace = False
            yield model
        finally:
            for module, flag in inplace.items():
                module.inplace = flag


def progress_bar(iterable=None, progress: bool = True, **kwargs) -> tqdm:
    """A ``tqdm.auto`` bar that leaves no trace when done.

    ``disable`` is passed only to switch the bar off: an explicit
    ``disable=False`` would override the environment variable
    ``TQDM_DISABLE=1`` (which the tests and the book build set).
    """
    return tqdm(iterable, leave=False, **kwargs, **({} if progress else {"disable": True}))


# --------------------------------------------------------------------------- training


def cross_entropy_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The default loss of :func:`train`: ``(cross_entropy(model(x), y), model(x))``."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _frozen_norms_to_eval(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are frozen keep their running statistics.

    In train mode a BatchNorm layer overwrites its running mean and variance
    with every batch, frozen weights or not; eval mode keeps them, so a frozen
    block stays exactly what it was.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def train(
    model: nn.Module,
    train_data: Dataset,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    test_data: Dataset | None = None,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = cross_entropy_step,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
) -> dict[str, list[float]]:
    """The course's one training loop: Adam on ``loss_fn`` over the trainable parameters.

    .. math:: \\theta \\leftarrow \\operatorname{Adam}\\big(\\theta,\\ \\nabla_\\theta
              \\tfrac{1}{|B|}\\textstyle\\sum_{(x, y) \\in B} J(\\theta, x, y)\\big)

    Only parameters with ``requires_grad`` are updated (a partly frozen model
    trains only its unfrozen part), and BatchNorm layers whose parameters are
    frozen keep their running statistics. ``loss_fn(model, x, y)`` returns the
    loss and the logits it was computed from: cross-entropy by default; Madry's
    adversarial training passes one that attacks ``x`` first (chapter 6). The
    model is trained in place; its ``requires_grad`` flags are restored and it
    is left in eval mode.

    Parameters
    ----------
    model : nn.Module
    train_data : Dataset of (x, y)
    epochs : int, default=1
    lr : float, default=1e-3
        Adam's learning rate.
    batch_size : int, default=64
    test_data : Dataset, optional
        Evaluated with :func:`accuracy` after every epoch.
    loss_fn : callable, default=cross_entropy_step
    seed : int, default=0
        Seed of the batch order.
    progress : bool, default=True
    desc : str, default="training"
        Label of the progress bar.

    Returns
    -------
    dict
        ``{"loss": [per step], "step": [steps done at each epoch's end],
        "train_acc": [per epoch, on the batches as trained], "test_acc": [per
        epoch, if test_data], "seconds": [wall time at each epoch's end]}``.

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
    >>> history = train(nn.Linear(2, 2), TensorDataset(x, y), epochs=20, lr=0.1, progress=False)
    >>> history["train_acc"][-1] > 0.9
    True
    """
    import time

    check_model(model)
    train_data = as_dataset(train_data, "train_data")
    check_int(epochs, "epochs")
    check_number(lr, "lr", low_open=True)
    check_int(batch_size, "batch_size")
    if test_data is not None:
        test_data = as_dataset(test_data, "test_data")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The model has no trainable parameters (all requires_grad=False); unfreeze some first.")
    dev = model_device(model)
    optimizer = torch.optim.Adam(params, lr=lr)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    history: dict[str, list[float]] = {"loss": [], "step": [], "train_acc": [], "seconds": []}
    if test_data is not None:
        history["test_acc"] = []
    start = time.perf_counter()
    with restoring(model), progress_bar(total=epochs * len(loader), desc=desc, progress=progress) as bar:
        for _ in range(epochs):
            correct = 0
            for x, y in loader:
                model.train()
                _frozen_norms_to_eval(model)
                x, y = x.to(dev), y.to(dev)
                loss, logits = loss_fn(model, x, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                history["loss"].append(loss.item())
                correct += (logits.argmax(1) == y).sum().item()
                bar.update()
            model.eval()
            history["step"].append(len(history["loss"]))
            history["train_acc"].append(correct / len(train_data))
            if test_data is not None:
                history["test_acc"].append(accuracy(model, test_data))
            history["seconds"].append(time.perf_counter() - start)
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, data: Dataset | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted class (N,) of ``model`` for each input of a dataset or batch; the mode is restored.

    Examples
    --------
    >>> predict(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), torch.zeros(4, 3, 1, 1)).shape
    torch.Size([4])
    """
    data = as_dataset(data)
    dev = model_device(model)
    with restoring(model):
        model.eval()
        return torch.cat([model(batch[0].to(dev)).argmax(1).cpu()
                          for batch in DataLoader(data, batch_size=batch_size)])


def accuracy(model: nn.Module, data: Dataset, batch_size: int = 256) -> float:
    """Fraction of ``data``'s ``(x, y)`` pairs that ``model`` classifies correctly."""
    data = as_dataset(data)
    labels = torch.cat([batch[1] for batch in DataLoader(data, batch_size=batch_size)])
    return (predict(model, data, batch_size) == labels).float().mean().item()


# --------------------------------------------------------------------------- course-trained models


def atomic_save(state: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it into place.

    Parallel runs (test workers, two kernels) never see half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def cached_model(
    kind: str,
    settings: dict[str, object],
    build: Callable[[], nn.Module],
    fit: Callable[[nn.Module], object],
    cache: bool = True,
) -> nn.Module:
    """A model the course trains itself: trained once, saved, and reloaded ever after.

    ``build()`` makes the untrained model, ``fit(model)`` trains it in place.
    The state dict is saved under ``config.data_dir()/models/<kind>_<key>.pt``,
    where the key hashes ``settings`` (every knob that changes the result:
    sizes, epochs, seeds, the data source); later calls load it with
    ``torch.load(weights_only=True)``. The model is returned in eval mode on
    :func:`config.device`, with ``model.is_pretrained = True`` and
    ``model.arch = kind``; ``model.train_seconds`` is the training time
    (``None`` when it came from the cache).

    Examples
    --------
    >>> net = cached_model("doc_linear", {"seed": 0}, lambda: nn.Linear(2, 2), lambda m: None, cache=False)
    >>> net.arch, net.is_pretrained
    ('doc_linear', True)
    """
    import time

    text = json.dumps({"kind": kind, **settings}, sort_keys=True, default=str)
    path = config.data_dir() / "models" / f"{kind}_{hashlib.sha1(text.encode()).hexdigest()[:12]}.pt"
    model = build().to(config.device())
    seconds = None
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True, map_location=config.device()))
    else:
        start = time.perf_counter()
        fit(model)
        seconds = time.perf_counter() - start
        if cache:
            atomic_save(model.state_dict(), path)
    model.is_pretrained = True
    model.arch = kind
    model.train_seconds = seconds
    return model.eval()


# --------------------------------------------------------------------------- measurements


def _window(func: Callable, args: tuple, kwargs: dict) -> tuple[int, int, int] | None:
    """(kernel, stride, dilation) along the height of a windowed operation, or None for other functions."""
    name = getattr(func, "__name__", "")

    def arg(i: int, key: str, default):
        value = args[i] if len(args) > i else kwargs.get(key, default)
        value = value if value is not None and value != [] else default
        return value[0] if isinstance(value, (tuple, list)) else value

    if name == "conv2d":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return weight.shape[-2], arg(3, "stride", 1), arg(5, "dilation", 1)
    if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        kernel = arg(1, "kernel_size", 1)
        return kernel, arg(2, "stride", kernel), arg(4, "dilation", 1) if name != "avg_pool2d" else 1
    return None


class _FieldTracker(torch.overrides.TorchFunctionMode):
    """Follows every tensor of a forward pass and the receptive field (r, j) of its units.

    A windowed operation (convolution, pooling) applies the chain rule
    r' = r + (k - 1) d j, j' = j s; any other operation takes the largest field of
    its inputs (a residual sum sees what either branch sees). Global pooling and
    operations that resize a map in other ways end the field's meaning.
    """

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.fields = {id(x): (1, 1)}
        self.alive = [x]  # keep tensors alive so that their ids are not reused

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        known = [self.fields[id(t)] for t in torch.utils._pytree.tree_leaves((args, kwargs))
                 if isinstance(t, torch.Tensor) and id(t) in self.fields]
        if not known:
            return out
        r, j = max(known)
        window = _window(func, args, kwargs)
        if window is not None:
            k, stride, dilation = window
            r, j = r + (k - 1) * dilation * j, j * stride
        for tensor in torch.utils._pytree.tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
                continue
            source = next(t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
            resized = source.ndim == 4 and tensor.shape[-2:] != source.shape[-2:]
            if resized and window is None and getattr(func, "__name__", "") != "pad":
                r = math.inf  # adaptive or global pooling, interpolation: no longer a local window
            self.fields[id(tensor)] = (r, j)
            self.alive.append(tensor)
        return out


def receptive_field(model: nn.Module, layer: str, channels: int = 3, size: int = 64) -> dict[str, int]:
    r"""The theoretical receptive field of one unit of ``layer``: its size in input pixels and the layer's stride.

    .. math:: r_\ell = r_{\ell-1} + (k_\ell - 1)\, d_\ell\, j_{\ell-1}, \qquad j_\ell = j_{\ell-1}\, s_\ell,
              \qquad r_0 = j_0 = 1

    (kernel :math:`k`, stride :math:`s`, dilation :math:`d`, jump :math:`j`) along a chain of
    layers. On a network with branches (residual blocks, parallel downsampling) the field of a
    sum is the larger of its inputs' fields. The rule is applied to every operation of one forward
    pass of a ``size``-pixel input (followed with PyTorch's function hooks), so it works on any
    network made of convolutions and poolings; tests compare it with the support of the gradient
    of one unit with respect to the input.

    Parameters
    ----------
    model : nn.Module
    layer : str
        A module name whose output is a (B, C, H, W) map.
    channels : int, default=3
        Input channels.
    size : int, default=64
        Side of the input used to trace the network (the result does not depend on it while
        the layer's map is at least 1×1).

    Returns
    -------
    dict
        ``{"size": r (pixels, square kernels assumed), "stride": j (input pixels per step of the map)}``.

    References
    ----------
    W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the effective receptive field in deep
    convolutional neural networks", NeurIPS 2016 (the theoretical field, and why the effective one
    is smaller).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3))
    >>> receptive_field(net, "3", channels=1)
    {'size': 8, 'stride': 2}
    """
    module = get_module(model, layer)
    check_int(size, "size", minimum=8)
    x = torch.zeros(1, channels, size, size, device=model_device(model))
    found: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _i, output: found.setdefault("out", output))
    tracker = _FieldTracker(x)
    try:
        with torch.no_grad(), inspection_mode(model), tracker:
            model(x)
    finally:
        handle.remove()
    out = found.get("out")
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ValueError(f"Layer {layer!r} does not output a (B, C, H, W) feature map; a receptive field "
                         "needs one.")
    r, j = tracker.fields[id(out)]
    if math.isinf(r):
        raise ValueError(f"Layer {layer!r} comes after a global pooling or a resize: each of its units sees "
                         "the whole image.")
    return {"size": int(r), "stride": int(j)}


# --------------------------------------------------------------------------- image prior


def total_variation(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    r"""Total-variation prior :math:`R_{V^\beta}` of Mahendran and Vedaldi, eq. (5).

    .. math::

        R_{V^\beta}(x) = \sum_{c,i,j} \left( (x_{c,i,j+1} - x_{c,i,j})^2
                         + (x_{c,i+1,j} - x_{c,i,j})^2 \right)^{\beta/2}

    summed over images, channels and the positions that have a right and a
    lower neighbour. :math:`\beta = 1` is the classical (isotropic) total
    variation, which lets sharp edges through while removing speckle;
    :math:`\beta = 2` penalises every edge quadratically (smooth images);
    Mahendran and Vedaldi invert features with :math:`\beta = 2`. For
    :math:`\beta < 2` the gradient is infinite where the image is flat: flat
    patches get the zero sub-gradient.

    Parameters
    ----------
    x : Tensor (..., H, W)
        H, W >= 2.
    beta : float, default=2.0
        Exponent, > 0.

    Returns
    -------
    Tensor ()
        A scalar, differentiable with respect to ``x``.

    References
    ----------
    A. Mahendran, A. Vedaldi, "Understanding deep image representations by
    inverting them", CVPR 2015.

    Examples
    --------
    >>> total_variation(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    tensor(1.)
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or min(x.shape[-2:]) < 2:
        raise ValueError(f"x must be a tensor of shape (..., H, W) with H, W >= 2, "
                         f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}.")
    check_number(beta, "beta", low_open=True)
    right = x[..., :-1, 1:] - x[..., :-1, :-1]  # x_{i,j+1} - x_{ij}
    down = x[..., 1:, :-1] - x[..., :-1, :-1]  # x_{i+1,j} - x_{ij}
    squared = right**2 + down**2
    if beta == 2:
        return squared.sum()
    positive = squared > 0
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe ** (beta / 2), torch.zeros_like(squared)).sum()
