"""Chapter 4: looking inside a CNN — filters, class models, saliency, guided
backprop, DeepDream, embeddings of features and feature inversion.

Shape letters: ``B`` images in a batch, ``C`` input channels (3 for ImageNet
models, 1 for the MNIST CNN), ``H, W`` height and width, ``K`` classes.
Images are float tensors in [0, 1]; the model's first layer normalises them.

Every function looks inside a network **by module name** through forward hooks
(``dict(model.named_modules())[layer]``), so the same code works on every model
of :mod:`utils.models` — ``"net.features.28"`` (VGG), ``"net.layer3"`` (ResNet),
``"conv2"`` (the MNIST CNN). A function may switch the model to ``eval()``,
freeze its parameters and turn off in-place ReLUs while it works; all of it is
restored afterwards, and the caller's input is never modified.

A *target* is either a class index ``c`` (the unnormalised score ``S_c``, a
logit) — an int, or one int per image — or a neuron ``(layer_name, channel)``
(a channel, or one per image), whose score is the channel's activation summed
over positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from . import models, plotting, widgets

__all__ = [
    "layer_names",
    "layer_features",
    "input_gradient",
    "saliency",
    "guided_backprop",
    "class_visualization",
    "deepdream",
    "tv_norm",
    "invert_features",
    "first_layer_filters",
    "embed_2d",
    "nearest_neighbors",
    "show_maps",
    "show_embedding",
]

Target = int | Sequence[int] | torch.Tensor | tuple[str, int | Sequence[int]]


# --------------------------------------------------------------------------- checks and hooks


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. models.pretrained('vgg16')), "
                        f"got {type(model).__name__}.")


def _module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule called ``layer``, or a ValueError listing a few valid names."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name such as 'conv2' or 'net.layer3', "
                        f"got {type(layer).__name__} {layer!r}.")
    named = dict(model.named_modules())
    if layer not in named or layer == "":
        names = [n for n in named if n]
        hint = names if len(names) <= 12 else names[:6] + ["..."] + names[-6:]
        raise ValueError(f"The model has no module named {layer!r}; choose one of {hint} "
                         f"(see visualize.layer_names(model)).")
    return named[layer]


def _first_conv(model: nn.Module) -> nn.Conv2d:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"The model ({type(model).__name__}) has no nn.Conv2d layer; "
                     "these visualisations need a convolutional network.")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_images(x: torch.Tensor, model: nn.Module, name: str = "x") -> torch.Tensor:
    """Validate an image or batch in [0, 1]; return a detached (B, C, H, W) copy on the model's device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (B, C, H, W), got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype}; "
                        "use x.float() / 255 for 8-bit images.")
    channels = _first_conv(model).in_channels
    if x.shape[-3] != channels:
        raise ValueError(f"{name} has {x.shape[-3]} channels (shape {tuple(x.shape)}) but the model "
                         f"expects {channels}.")
    if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ValueError(f"{name} must hold pixels in [0, 1], got values in "
                         f"[{x.min().item():.3g}, {x.max().item():.3g}]; course images are never "
                         "normalised by hand (the model's first layer does it).")
    batch = x if x.ndim == 4 else x[None]
    return batch.detach().clone().float().to(_device(model))


def _check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


@contextmanager
def _inspection_mode(model: nn.Module) -> Iterator[None]:
    """eval(), frozen parameters and out-of-place ReLUs — then everything restored.

    In-place ReLUs (torchvision's ``inplace=True``) would overwrite an
    activation captured by a hook; turning them off changes no value.
    """
    training = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    inplace = {m: m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)}
    try:
        model.eval()
        model.requires_grad_(False)
        for module in inplace:
            module.inplace = False
        yield
    finally:
        for module, mode in training.items():
            module.training = mode
        for param, flag in grads.items():
            param.requires_grad_(flag)
        for module, flag in inplace.items():
            module.inplace = flag


def _bar(progress: bool, **kwargs) -> tqdm:
    """A progress bar; ``disable`` is passed only to switch it off, so that the
    environment variable ``TQDM_DISABLE=1`` (set by the tests) still applies."""
    return tqdm(leave=False, **kwargs, **({} if progress else {"disable": True}))


class _StopForward(Exception):
    """Raised by a hook once the wanted activation is computed: no work after it."""


def _forward_to(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of module ``layer`` on input ``x``; the forward pass stops there."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        store["out"] = output
        raise _StopForward

    handle = _module(model, layer).register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "out" not in store:
        raise ValueError(f"Module {layer!r} was not called in the model's forward pass.")
    return store["out"]


def _per_image_indices(value, batch: int, count: int, what: str, device: torch.device) -> torch.Tensor:
    """One index per image from an int or a sequence, each checked against ``count``."""
    idx = torch.as_tensor(value, device=device).long().reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(batch)
    if idx.numel() != batch:
        raise ValueError(f"Got {idx.numel()} {what} targets for a batch of {batch} images; "
                         "give one int, or one per image.")
    if idx.min() < 0 or idx.max() >= count:
        raise ValueError(f"{what.capitalize()} target {value!r} is out of range: use 0..{count - 1} "
                         f"({count} to choose from).")
    return idx


def _is_neuron(target: Target) -> bool:
    return isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str)


def _check_target(target: Target) -> None:
    index = target[1] if _is_neuron(target) else target
    if isinstance(index, (bool, str)) or not isinstance(index, (int, np.integer, Sequence, torch.Tensor)):
        raise TypeError(f"target must be a class index (int or one per image) or a neuron "
                        f"(layer_name, channel), got {type(target).__name__} {target!r}.")


def _target_score(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Score per image (B,): the logit ``S_c(x)`` or a channel's summed activation."""
    if _is_neuron(target):
        layer, channel = target
        activation = _forward_to(model, x, layer)
        idx = _per_image_indices(channel, len(x), activation.shape[1], f"{layer!r} channel", x.device)
        return activation[torch.arange(len(x)), idx].reshape(len(x), -1).sum(1)
    logits = model(x)
    idx = _per_image_indices(target, len(x), logits.shape[1], "class", x.device)
    return logits.gather(1, idx[:, None])[:, 0]


def layer_names(model: nn.Module, kind: type[nn.Module] | None = None) -> list[str]:
    """Names of the model's submodules, optionally only those of one type.

    Examples
    --------
    >>> layer_names(models.MnistCNN(), nn.ReLU)
    ['relu1', 'relu2', 'relu3']
    """
    _check_model(model)
    return [n for n, m in model.named_modules() if n and (kind is None or isinstance(m, kind))]


@torch.no_grad()
def layer_features(model: nn.Module, x: torch.Tensor, layer: str, batch_size: int = 256) -> torch.Tensor:
    """Activations of module ``layer`` for images ``x``, computed batch by batch.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    layer : str
        Module name, e.g. ``"relu3"`` (the MNIST CNN's penultimate layer).
    batch_size : int, default=256

    Returns
    -------
    Tensor (B, ...)
        The layer's output, on the CPU (the forward pass stops at ``layer``).

    Examples
    --------
    >>> layer_features(models.MnistCNN(), torch.rand(5, 1, 28, 28), "relu3").shape
    torch.Size([5, 64])
    """
    _check_model(model)
    _module(model, layer)
    x = _check_images(x, model)
    _check_positive_int(batch_size, "batch_size")
    with _inspection_mode(model):
        return torch.cat([_forward_to(model, chunk, layer).cpu() for chunk in x.split(batch_size)])


# --------------------------------------------------------------------------- saliency and guided backprop


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    r"""Plain backpropagation: the gradient of the target score with respect to the pixels.

    .. math::

        g = \frac{\partial S_c(x)}{\partial x}

    Parameters
    ----------
    model : nn.Module
        A course model taking [0, 1] pixels.
    x : Tensor (B, C, H, W) or (C, H, W)
        Images in [0, 1] (not modified).
    target : int, sequence of B ints, or (layer_name, channel)
        The class (or neuron) whose score is differentiated.

    Returns
    -------
    Tensor (B, C, H, W)
        The signed gradient, one per image (scores of different images do not mix).

    References
    ----------
    .. [1] D. E. Rumelhart, G. E. Hinton, R. J. Williams, "Learning representations
       by back-propagating errors", Nature 1986.

    Examples
    --------
    >>> input_gradient(models.MnistCNN(), torch.rand(2, 1, 28, 28), target=3).shape
    torch.Size([2, 1, 28, 28])
    """
    _check_model(model)
    _check_target(target)
    x = _check_images(x, model).requires_grad_(True)
    with _inspection_mode(model):
        score = _target_score(model, x, target)
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad


def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    r"""Saliency map of Simonyan et al.: the largest input gradient over colour channels.

    .. math::

        M_{ij} = \max_{k} \left| \frac{\partial S_c(x)}{\partial x_{k,i,j}} \right|

    where :math:`S_c` is the *unnormalised* score (the logit, not the softmax,
    whose gradient would also reward lowering the other classes).

    Parameters
    ----------
    model : nn.Module
        A course model taking [0, 1] pixels.
    x : Tensor (B, C, H, W) or (C, H, W)
        Images in [0, 1] (not modified).
    target : int, sequence of B ints, or (layer_name, channel)
        The class (or neuron) whose score is differentiated.

    Returns
    -------
    Tensor (B, H, W)
        Non-negative saliency per pixel.

    References
    ----------
    .. [1] K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional
       Networks: Visualising Image Classification Models and Saliency Maps", 2014.

    Examples
    --------
    >>> saliency(models.MnistCNN(), torch.rand(2, 1, 28, 28), target=3).shape
    torch.Size([2, 28, 28])
    """
    return input_gradient(model, x, target).abs().amax(dim=1)


class _PositiveGradientOnly(torch.autograd.Function):
    """Identity forward; backward keeps the positive part of the gradient."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


def _guided_hook(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    # Placed after a ReLU y = max(x, 0), whose own backward multiplies by 1[x > 0],
    # the two together give the guided rule  R_in = 1[x > 0] * max(R_out, 0).
    # A forward hook fires at every call, so a ReLU module that a ResNet block
    # uses twice is guided at both places.
    return _PositiveGradientOnly.apply(output)


@contextmanager
def _guided_relus(model: nn.Module) -> Iterator[None]:
    """Guided backward rule on every nn.ReLU of ``model`` while inside the block."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"The model ({type(model).__name__}) has no nn.ReLU modules; guided "
                         "backprop modifies the backward pass of ReLUs.")
    handles = [relu.register_forward_hook(_guided_hook) for relu in relus]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    r"""Guided backpropagation of Springenberg et al.

    The gradient of the target score is propagated back as usual, except
    through every ReLU, where only positive gradients that reach positive
    inputs pass:

    .. math::

        R^{(l)} = \mathbb{1}\left[x^{(l)} > 0\right] \cdot \max\left(R^{(l+1)}, 0\right)

    (plain backprop keeps the first factor only; the "deconvnet" of Zeiler and
    Fergus the second only). The model itself is not edited: forward hooks on
    the ReLU modules are added and removed.

    Parameters
    ----------
    model : nn.Module
        A course model with nn.ReLU modules (torchvision's in-place ReLUs and
        ReLUs used several times, as in ResNet, are handled).
    x : Tensor (B, C, H, W) or (C, H, W)
        Images in [0, 1] (not modified).
    target : int, sequence of B ints, or (layer_name, channel)
        A class, or an intermediate neuron such as ``("net.features.28", 7)``.

    Returns
    -------
    Tensor (B, C, H, W)
        The guided gradient with respect to the input pixels.

    References
    ----------
    .. [1] J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving
       for Simplicity: The All Convolutional Net", ICLR workshop 2015.

    Examples
    --------
    >>> guided_backprop(models.MnistCNN(), torch.rand(1, 1, 28, 28), ("conv2", 5)).shape
    torch.Size([1, 1, 28, 28])
    """
    _check_model(model)
    with _guided_relus(model):
        return input_gradient(model, x, target)


# --------------------------------------------------------------------------- class models


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, (min(image.shape[-2:]) - 1) // 2)
    if radius < 1:
        return image
    return TF.gaussian_blur(image, 2 * radius + 1, sigma)


def _clip_small(image: torch.Tensor, score_grad: torch.Tensor, percentile: float) -> torch.Tensor:
    """Yosinski et al.: zero the pixels of small norm and of small contribution |x · ∇S|, per image."""
    norm = image.norm(dim=1, keepdim=True)
    contribution = (image * score_grad).sum(1, keepdim=True).abs()
    keep = torch.ones_like(norm, dtype=torch.bool)
    for value in (norm, contribution):
        threshold = torch.quantile(value.flatten(1), percentile / 100, dim=1)
        keep &= value >= threshold[:, None, None, None]
    return image * keep


def _per_image_mean_abs(t: torch.Tensor) -> torch.Tensor:
    return t.abs().mean(dim=tuple(range(1, t.ndim)), keepdim=True) + 1e-12


def _ascent_step(image: torch.Tensor, score_grad: torch.Tensor, lr: float, l2: float) -> torch.Tensor:
    # d/dI [S_c(I) - l2 ||I||^2] = dS_c/dI - 2 l2 I.  The step is scaled by each
    # image's mean gradient magnitude, so that lr is in pixel units for any model.
    grad = score_grad - 2 * l2 * image
    return (image + lr * grad / _per_image_mean_abs(grad)).clamp(0, 1)


def class_visualization(
    model: nn.Module,
    target: int | Sequence[int] | tuple[str, int | Sequence[int]],
    size: int | None = None,
    steps: int = 100,
    lr: float = 0.05,
    l2: float = 1e-3,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    clip_percentile: float = 0.0,
    jitter: int = 0,
    noise: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    r"""Class model by gradient ascent (Simonyan et al.), optionally regularised (Yosinski et al.).

    .. math::

        I^* = \arg\max_I \; S_c(I) - \lambda \lVert I \rVert_2^2

    Starting from the zero image (plus optional noise, which wakes up neurons
    that are silent on a blank image), each step moves ``I`` along the gradient
    (scaled by its mean magnitude), then keeps it in [0, 1]. Yosinski et al.'s
    regularisers, each optional: a random shift (``jitter``) before every
    gradient, a Gaussian blur every ``blur_every`` steps, and zeroing pixels
    whose norm or whose contribution :math:`|\sum_k I_k\,\partial S_c/\partial I_k|`
    lies below the ``clip_percentile``-th percentile.

    Parameters
    ----------
    model : nn.Module
    target : int, sequence of ints, or (layer_name, channel or sequence of channels)
        A class index, or an intermediate neuron. A sequence optimises one
        image per entry, all in one batch.
    size : int, optional
        Side of the square image; default 28 for the MNIST CNN, else 224.
    steps : int, default=100
    lr : float, default=0.05
        Step length in pixel units (mean absolute change per step).
    l2 : float, default=1e-3
        The penalty weight :math:`\lambda`.
    blur_every : int, default=0
        Blur every that many steps (0: never).
    blur_sigma : float, default=0.5
        Standard deviation of the blur, in pixels.
    clip_percentile : float, default=0
        Percentile (0–100) below which small-norm and small-contribution pixels are zeroed.
    jitter : int, default=0
        Largest random shift, in pixels.
    noise : float, default=0
        The start is uniform noise in [0, noise] (0: the zero image).
    seed : int, default=0
        Seed of the jitter and the noise.
    progress : bool, default=True

    Returns
    -------
    Tensor (C, size, size), or (N, C, size, size) for N targets
        The class model(s), values in [0, 1].

    References
    ----------
    .. [1] K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks", 2014.
    .. [2] J. Yosinski, J. Clune, A. Nguyen, T. Fuchs, H. Lipson, "Understanding
       Neural Networks Through Deep Visualization", ICML workshop 2015.

    Examples
    --------
    >>> class_visualization(models.MnistCNN(), target=3, steps=5, progress=False).shape
    torch.Size([1, 28, 28])
    """
    _check_model(model)
    _check_target(target)
    size = size if size is not None else (28 if isinstance(model, models.MnistCNN) else 224)
    for value, name in ((size, "size"), (steps, "steps")):
        _check_positive_int(value, name)
    for value, name in ((blur_every, "blur_every"), (jitter, "jitter")):
        _check_positive_int(value, name, minimum=0)
    if not (lr > 0 and l2 >= 0 and blur_sigma > 0 and 0 <= clip_percentile < 100 and 0 <= noise <= 1):
        raise ValueError(f"Need lr > 0, l2 >= 0, blur_sigma > 0, 0 <= clip_percentile < 100 and "
                         f"0 <= noise <= 1; got lr={lr!r}, l2={l2!r}, blur_sigma={blur_sigma!r}, "
                         f"clip_percentile={clip_percentile!r}, noise={noise!r}.")
    index = target[1] if _is_neuron(target) else target
    batch = 1 if isinstance(index, (int, np.integer)) else len(index)
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, _first_conv(model).in_channels, size, size)
    image = (noise * torch.rand(shape, generator=generator)).to(_device(model))
    with _inspection_mode(model):
        for step in _bar(progress, iterable=range(steps), desc="class model"):
            shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
            x = image.roll(shift, dims=(2, 3)).requires_grad_(True)
            (score_grad,) = torch.autograd.grad(_target_score(model, x, target).sum(), x)
            score_grad = score_grad.roll([-s for s in shift], dims=(2, 3))
            image = _ascent_step(image, score_grad, lr, l2)
            if blur_every and (step + 1) % blur_every == 0:
                image = _gaussian_blur(image, blur_sigma)
            if clip_percentile > 0:
                image = _clip_small(image, score_grad, clip_percentile)
    return image[0].detach() if isinstance(index, (int, np.integer)) else image.detach()


# --------------------------------------------------------------------------- DeepDream


def _dream_step(model: nn.Module, image: torch.Tensor, layer: str, lr: float, jitter: int,
                generator: torch.Generator) -> torch.Tensor:
    shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    x = image.roll(shift, dims=(2, 3)).requires_grad_(True)
    features = _forward_to(model, x, layer)
    # The gradient of (1/2) sum f^2 with respect to f is f itself: seed the
    # backward pass at the layer with its own activation.
    (grad,) = torch.autograd.grad(features, x, grad_outputs=features.detach())
    grad = grad.roll([-s for s in shift], dims=(2, 3))
    return (image + lr * grad / _per_image_mean_abs(grad)).clamp(0, 1)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def deepdream(
    model: nn.Module,
    image: torch.Tensor,
    layer: str,
    steps: int = 10,
    lr: float = 0.02,
    octaves: int = 3,
    octave_scale: float = 1.4,
    jitter: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    r"""DeepDream (Mordvintsev et al.): amplify whatever layer ``layer`` already sees.

    .. math::

        I^* = \arg\max_I \; \tfrac12 \sum_i f_i(I)^2,
        \qquad \frac{\partial}{\partial f}\,\tfrac12 \lVert f \rVert^2 = f,

    so the backward pass starts at the layer with its own activation as
    gradient. The image is processed from a coarse octave (shrunk by
    ``octave_scale`` per octave) to the full size; the detail dreamed at one
    octave is upsampled and added to the next. Each step shifts the image by a
    random jitter, moves it along the gradient (scaled by its mean magnitude)
    and keeps it in [0, 1].

    Parameters
    ----------
    model : nn.Module
    image : Tensor (C, H, W) or (1, C, H, W)
        Start image in [0, 1] (not modified).
    layer : str
        Module name, e.g. ``"net.features.22"`` (VGG-16) or ``"conv2"``.
    steps : int, default=10
        Ascent steps per octave.
    lr : float, default=0.02
        Step length in pixel units.
    octaves : int, default=3
    octave_scale : float, default=1.4
    jitter : int, default=4
        Largest random shift, in pixels.
    seed : int, default=0
    progress : bool, default=True

    Returns
    -------
    Tensor, same shape as ``image``
        The dreamed image in [0, 1].

    References
    ----------
    .. [1] A. Mordvintsev, C. Olah, M. Tyka, "Inceptionism: Going Deeper into
       Neural Networks", Google Research Blog, 2015.

    Examples
    --------
    >>> deepdream(models.MnistCNN(), torch.rand(1, 28, 28), "relu2", steps=2, octaves=1).shape
    torch.Size([1, 28, 28])
    """
    _check_model(model)
    _module(model, layer)
    x = _check_images(image, model, "image")
    if len(x) != 1:
        raise ValueError(f"deepdream takes one image, got a batch of {len(x)}; loop over the images.")
    for value, name in ((steps, "steps"), (octaves, "octaves")):
        _check_positive_int(value, name)
    _check_positive_int(jitter, "jitter", minimum=0)
    if not (lr > 0 and octave_scale > 1):
        raise ValueError(f"Need lr > 0 and octave_scale > 1, got lr={lr!r}, octave_scale={octave_scale!r}.")
    height, width = x.shape[-2:]
    sizes = [(round(height / octave_scale**k), round(width / octave_scale**k)) for k in reversed(range(octaves))]
    generator = torch.Generator().manual_seed(seed)
    detail = torch.zeros_like(_resize(x, sizes[0]))
    with _inspection_mode(model), _bar(progress, total=octaves * steps, desc="DeepDream") as bar:
        for size in sizes:
            base = _resize(x, size)
            dream = (base + _resize(detail, size)).clamp(0, 1)
            for _ in range(steps):
                dream = _dream_step(model, dream, layer, lr, jitter, generator)
                bar.update()
            detail = dream - base
    return dream.detach().reshape(image.shape).to(image.device)


# --------------------------------------------------------------------------- feature inversion


def tv_norm(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    r"""Total-variation prior :math:`R_{V^\beta}` of Mahendran and Vedaldi.

    .. math::

        R_{V^\beta}(x) = \sum_{k,i,j} \left( (x_{k,i,j+1} - x_{k,i,j})^2
                         + (x_{k,i+1,j} - x_{k,i,j})^2 \right)^{\beta/2}

    over all images, channels and pixels with a right and a lower neighbour.
    :math:`\beta = 1` is the classical total variation; larger :math:`\beta`
    penalises large jumps more and removes the spikes that inversion produces.

    Parameters
    ----------
    x : Tensor (..., H, W)
    beta : float, default=2.0
        Must be positive.

    Returns
    -------
    Tensor ()
        A scalar, differentiable with respect to ``x``.

    References
    ----------
    .. [1] A. Mahendran, A. Vedaldi, "Understanding Deep Image Representations
       by Inverting Them", CVPR 2015.

    Examples
    --------
    >>> tv_norm(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    tensor(1.)
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a tensor of shape (..., H, W), got {getattr(x, 'shape', type(x))}.")
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta!r}.")
    right = x[..., :-1, 1:] - x[..., :-1, :-1]
    down = x[..., 1:, :-1] - x[..., :-1, :-1]
    squared = right**2 + down**2
    # beta < 2 has an infinite slope at 0: a tiny epsilon keeps the gradient finite.
    return (squared if beta == 2 else (squared + 1e-8) ** (beta / 2)).sum()


def _feature_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||Phi(x) - Phi_0||^2 / ||Phi_0||^2, the relative reconstruction error."""
    return (features - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


def invert_features(
    model: nn.Module,
    layer: str,
    image: torch.Tensor,
    steps: int = 200,
    tv_weight: float = 5.0,
    beta: float = 2.0,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    r"""Reconstruct an image from its features at ``layer`` (Mahendran and Vedaldi).

    .. math::

        x^* = \arg\min_{x \in [0,1]^{C\times H\times W}}
              \frac{\lVert \Phi(x) - \Phi(x_0) \rVert^2}{\lVert \Phi(x_0) \rVert^2}
              + \frac{\lambda_{V}}{HW}\, R_{V^\beta}(x)

    with :math:`\Phi` the activation of ``layer`` and :func:`tv_norm` as the
    prior. Starts from mid-grey plus weak uniform noise in [0.4, 0.6] (seeded),
    minimises with Adam, and keeps
    ``x`` in [0, 1]. Whatever the features do not constrain is filled in by the
    prior: the deeper the layer, the less of the image comes back.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Module name, e.g. ``"net.features.5"`` (AlexNet) or ``"relu2"``.
    image : Tensor (C, H, W) or (1, C, H, W)
        The image :math:`x_0` in [0, 1] (not modified).
    steps : int, default=200
    tv_weight : float, default=5.0
        :math:`\lambda_V`, the weight of the prior per pixel.
    beta : float, default=2.0
    lr : float, default=0.05
        Adam's learning rate, in pixel units.
    seed : int, default=0
        Seed of the starting noise.
    progress : bool, default=True

    Returns
    -------
    Tensor, same shape as ``image``
        The reconstruction, values in [0, 1].

    References
    ----------
    .. [1] A. Mahendran, A. Vedaldi, "Understanding Deep Image Representations
       by Inverting Them", CVPR 2015.

    Examples
    --------
    >>> invert_features(models.MnistCNN(), "relu1", torch.rand(1, 28, 28), steps=3, progress=False).shape
    torch.Size([1, 28, 28])
    """
    _check_model(model)
    _module(model, layer)
    x0 = _check_images(image, model, "image")
    _check_positive_int(steps, "steps")
    if not (tv_weight >= 0 and beta > 0 and lr > 0):
        raise ValueError(f"Need tv_weight >= 0, beta > 0 and lr > 0; got tv_weight={tv_weight!r}, "
                         f"beta={beta!r}, lr={lr!r}.")
    generator = torch.Generator().manual_seed(seed)
    recon = (0.4 + 0.2 * torch.rand(x0.shape, generator=generator)).to(x0.device).requires_grad_(True)
    optimizer = torch.optim.Adam([recon], lr=lr)
    pixels = x0.shape[-1] * x0.shape[-2]
    with _inspection_mode(model):
        target = _forward_to(model, x0, layer).detach()
        for _ in _bar(progress, iterable=range(steps), desc=f"inverting {layer}"):
            loss = _feature_loss(_forward_to(model, recon, layer), target)
            loss = loss + tv_weight / pixels * tv_norm(recon, beta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                recon.clamp_(0, 1)
    return recon.detach().reshape(image.shape).to(image.device)


# --------------------------------------------------------------------------- filters and embeddings


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    r"""The first convolution's filters, each rescaled to [0, 1] for display.

    .. math::

        \tilde w_n = \frac{w_n - \min w_n}{\max w_n - \min w_n}

    per filter :math:`n`, so that every filter uses the whole grey/colour range
    (a constant filter becomes mid-grey).

    Parameters
    ----------
    model : nn.Module
        Any model with an nn.Conv2d; the first one in ``model.modules()`` is used.

    Returns
    -------
    Tensor (C_out, C_in, k, k)
        On the CPU, values in [0, 1].

    References
    ----------
    .. [1] A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification with
       Deep Convolutional Neural Networks", NeurIPS 2012 (their Figure 3).

    Examples
    --------
    >>> first_layer_filters(models.MnistCNN()).shape
    torch.Size([16, 1, 3, 3])
    """
    _check_model(model)
    weight = _first_conv(model).weight.detach().cpu().float()
    low = weight.amin(dim=(1, 2, 3), keepdim=True)
    span = weight.amax(dim=(1, 2, 3), keepdim=True) - low
    return torch.where(span > 0, (weight - low) / span.clamp_min(1e-12), torch.full_like(weight, 0.5))


def _as_matrix(features: torch.Tensor | np.ndarray, name: str = "features") -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    if not isinstance(features, np.ndarray):
        raise TypeError(f"{name} must be a tensor or array of shape (N, D), got {type(features).__name__}.")
    features = features.reshape(len(features), -1).astype(np.float64)
    if len(features) < 3 or not np.isfinite(features).all():
        raise ValueError(f"{name} must hold at least 3 finite rows, got shape {features.shape}.")
    return features


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0,
             perplexity: float = 30.0, max_iter: int = 1000) -> np.ndarray:
    r"""Two-dimensional embedding of feature vectors by PCA or t-SNE.

    PCA projects the centred features on their two leading principal axes,
    from the SVD :math:`X - \bar X = U \Sigma V^\top`:

    .. math::

        Y = (X - \bar X)\, V_{:, 1:2} = U_{:, 1:2}\, \Sigma_{1:2},

    each axis signed so that its largest-magnitude score is positive.
    t-SNE (scikit-learn, PCA initialisation) matches neighbourhood
    probabilities instead and keeps clusters, not distances.

    Parameters
    ----------
    features : Tensor or array (N, ...)
        One row per example (extra dimensions are flattened).
    method : {"pca", "tsne"}, default="pca"
    seed : int, default=0
        Random state of t-SNE.
    perplexity : float, default=30
        t-SNE's effective number of neighbours (capped at (N - 1) / 3).
    max_iter : int, default=1000
        t-SNE's optimisation steps (at least 250).

    Returns
    -------
    ndarray (N, 2)

    References
    ----------
    .. [1] L. van der Maaten, G. Hinton, "Visualizing Data using t-SNE", JMLR 2008.

    Examples
    --------
    >>> embed_2d(np.random.rand(50, 8)).shape
    (50, 2)
    """
    X = _as_matrix(features)
    if method == "pca":
        centred = X - X.mean(axis=0)
        U, S, _ = np.linalg.svd(centred, full_matrices=False)
        Y = U[:, :2] * S[:2]
        # An SVD fixes each axis only up to sign; choose it from the data so the
        # figure is the same on every machine.
        signs = np.sign(Y[np.abs(Y).argmax(axis=0), [0, 1]])
        return Y * np.where(signs == 0, 1, signs)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(X) - 1) / 3), init="pca",
                    random_state=seed, max_iter=max_iter)
        # One OpenMP thread: Barnes-Hut t-SNE's threads spin-wait and slow down
        # many-fold on a busy CPU, and one thread makes the result reproducible.
        with threadpool_limits(limits=1, user_api="openmp"):
            return tsne.fit_transform(X)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}.")


def nearest_neighbors(features: torch.Tensor | np.ndarray, queries: Sequence[int], k: int = 5) -> np.ndarray:
    r"""Indices of the ``k`` nearest rows (Euclidean) to each query row, the query excluded.

    .. math::

        \mathrm{NN}_k(q) = \operatorname{arg\,sort}_{n \neq q} \lVert x_n - x_q \rVert_2 \;[:k]

    Run on pixels and on a network's features, it shows what the network
    considers similar (Krizhevsky et al., Figure 4).

    Parameters
    ----------
    features : Tensor or array (N, ...)
    queries : sequence of int
        Row indices of the query examples.
    k : int, default=5

    Returns
    -------
    ndarray (len(queries), k) of int

    Examples
    --------
    >>> nearest_neighbors(np.array([[0.0], [1.0], [5.0], [1.5]]), [1], k=2)
    array([[3, 0]])
    """
    X = _as_matrix(features)
    queries = np.asarray(queries, dtype=int).reshape(-1)
    _check_positive_int(k, "k")
    if k >= len(X) or queries.size == 0 or queries.min() < 0 or queries.max() >= len(X):
        raise ValueError(f"Need 0 <= queries < {len(X)} and k < {len(X)}; got queries={queries.tolist()}, k={k}.")
    from scipy.spatial.distance import cdist

    distances = cdist(X[queries], X, "sqeuclidean")  # (queries, N), memory O(queries * N)
    distances[np.arange(len(queries)), queries] = np.inf
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


# --------------------------------------------------------------------------- figures of this chapter


def show_maps(images: torch.Tensor, maps: Sequence[torch.Tensor], row_titles: Sequence[str],
              titles: Sequence[str] | None = None, size: float = 2.2) -> Figure:
    """Images in the first row, then one row per map (saliency (B,H,W) or gradients (B,C,H,W)).

    Saliency maps are shown in a hot colour map, scaled per image; signed
    gradients as ``0.5 + g / (2 max|g|)`` so that grey means zero.
    """
    images = images if images.ndim == 4 else images[None]
    rows = [images] + [m if m.ndim == 4 else m[:, None] for m in maps]
    if len(rows) != len(row_titles):
        raise ValueError(f"Got {len(row_titles)} row titles for {len(rows)} rows (the images, then each map).")
    single = len(images) == 1  # one image: lay the panels out side by side
    shape = (1, len(rows)) if single else (len(rows), len(images))
    fig, axes = plt.subplots(*shape, figsize=(size * shape[1], size * shape[0]), squeeze=False)
    for r, row in enumerate(rows):
        for b, panel in enumerate(row.detach().cpu()):
            ax = axes[0, r] if single else axes[r, b]
            ax.axis("off")
            if r == 0:
                ax.imshow(plotting.to_numpy_image(panel), cmap="gray", vmin=0, vmax=1)
            elif panel.shape[0] == 1 and panel.min() >= 0:
                ax.imshow(panel[0], cmap="hot", vmin=0, vmax=panel.max().clamp_min(1e-12).item())
            else:
                ax.imshow(plotting.to_numpy_image(0.5 + panel / (2 * panel.abs().max().clamp_min(1e-12))),
                          cmap="gray", vmin=0, vmax=1)
            if single:
                ax.set_title(row_titles[r] if r or titles is None else titles[0], fontsize=9)
            elif r == 0 and titles is not None:
                ax.set_title(titles[b], fontsize=9)
        if not single:
            axes[r, 0].text(-0.08, 0.5, row_titles[r], transform=axes[r, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def show_embedding(points: np.ndarray, labels: Sequence[int] | np.ndarray, title: str = "",
                   ax: plt.Axes | None = None) -> Figure:
    """Scatter plot of a 2-D embedding, one colour per class, with a legend."""
    labels = np.asarray(labels)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.2))
    for label in np.unique(labels):
        mask = labels == label
        ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, color=plt.cm.tab10(int(label) % 10),
                   label=str(label))
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(markerscale=2.5, fontsize=7, ncol=2, loc="best", frameon=False)
    ax.figure.tight_layout()
    return ax.figure


# ------------------------------------------------------------------------- Try it


def saliency_widget(model, images, class_names=None, layers=None) -> ipywidgets.VBox:
    """Pick an image, a class and a layer; see the saliency map and guided backprop side by side.

    With layer "class score" the target is the chosen class's logit; with a
    layer name it is that layer's most active channel on the image (a neuron).

    Parameters
    ----------
    model : nn.Module
        A course model (e.g. ``models.mnist_cnn()``).
    images : Tensor (B, C, H, W) in [0, 1]
    class_names : list of str, optional
        Names of the classes (default "0", "1", ...).
    layers : list of str, optional
        Layer names to offer (default: every nn.ReLU of the model).
    """
    with torch.no_grad():
        num_classes = model(images[:1]).shape[1]
    class_names = class_names or [str(c) for c in range(num_classes)]
    layers = layers if layers is not None else layer_names(model, nn.ReLU)

    def draw(image: int, target_class: int, layer: str):
        x = images[image : image + 1]
        if layer == "class score":
            target, what = target_class, f"class {class_names[target_class]}"
        else:
            activation = layer_features(model, x, layer)[0]
            channel = int(activation.reshape(len(activation), -1).sum(1).argmax())
            target, what = (layer, channel), f"{layer}, channel {channel}"
        maps = [saliency(model, x, target), guided_backprop(model, x, target)]
        with torch.no_grad():
            predicted = class_names[int(model(x).argmax())]
        fig = show_maps(x, maps, ["image", "saliency", "guided backprop"],
                                  titles=[f"predicted: {predicted}"], size=2.6)
        fig.suptitle(f"target: {what}", fontsize=10)
        fig.tight_layout()
        return fig

    return widgets.try_it(
        draw,
        image=ipywidgets.Dropdown(options=[(f"image {i}", i) for i in range(len(images))], value=0,
                               description="image"),
        target_class=ipywidgets.Dropdown(options=[(name, c) for c, name in enumerate(class_names)], value=0,
                                      description="class"),
        layer=ipywidgets.Dropdown(options=["class score", *layers], value="class score", description="layer"),
    )


def class_model_widget(model, class_names=None, size=None, steps: int = 60) -> ipywidgets.VBox:
    """Class models by gradient ascent with sliders for the L2 weight, the blur and the clipping.

    Press Run to optimise (a few seconds): ``class_visualization``
    with the chosen class, λ, blur σ (0 switches blurring off) and clipping
    percentile.
    """
    from . import plotting

    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    size = size or (28 if channels == 1 else 128)
    with torch.no_grad():
        num_classes = model(torch.zeros(1, channels, size, size)).shape[1]
    class_names = class_names or [str(c) for c in range(num_classes)]

    def draw(target_class: int, l2: float, blur_sigma: float, clip_percentile: float):
        image = class_visualization(
            model, target_class, size=size, steps=steps, l2=l2, blur_every=4 if blur_sigma > 0 else 0,
            blur_sigma=max(blur_sigma, 1e-3), clip_percentile=clip_percentile, jitter=1, progress=False)
        with torch.no_grad():
            score = model(image[None])[0, target_class].item()
        return plotting.show_images([image], [f"class {class_names[target_class]}: score {score:.1f}"],
                                    size=3.2)

    return widgets.try_it(
        draw,
        run_button=True,
        target_class=ipywidgets.Dropdown(options=[(name, c) for c, name in enumerate(class_names)], value=0,
                                      description="class"),
        l2=ipywidgets.FloatLogSlider(value=1e-3, base=10, min=-4, max=1, step=0.5, description="λ (L2)"),
        blur_sigma=ipywidgets.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.1, description="blur σ"),
        clip_percentile=ipywidgets.FloatSlider(value=0.0, min=0.0, max=50.0, step=5.0, description="clip %"),
    )
