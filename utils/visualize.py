"""Chapter 4: looking inside a CNN — filters (learned with and without labels), class
models, saliency, SmoothGrad, integrated gradients, guided backprop, Grad-CAM,
DeepDream, feature inversion and embeddings of features.

Shape letters: ``B`` images in a batch, ``C`` input channels (3 for the ImageNet
network, 1 for the MNIST CNN), ``H, W`` height and width, ``K`` classes.
Images are float tensors in [0, 1]; the model's first layer normalises them.

Every method takes ``(model, x, ...)`` in this order and looks inside the network
**by module name** through forward hooks (:func:`core.capture`), so the same code
runs on the course's EfficientNet-Lite0 (``"net.blocks.4"``, ``"net.bn2"``), a
torchvision classifier (``"net.layer3"``) and the MNIST CNN (``"conv2"``). The
model is put in :func:`core.inspection_mode` while a method works (eval, frozen
parameters, out-of-place activations) and given back as it was; the caller's
input is never modified.

A *target* says which number is explained or maximised:

* ``c`` — a class: the unnormalised score :math:`S_c` (the logit); an int, or
  one int per image;
* ``(layer, k)`` — a **channel**: channel ``k`` of the module named ``layer``,
  summed over all positions;
* ``(layer, k, (i, j))`` — a single **neuron**: channel ``k`` at row ``i``,
  column ``j`` of that layer's map (one unit, as Zeiler and Fergus show).

"Normalised image" means the model's input after its ``Normalize`` layer:
:math:`z = (x - \\mu) / \\sigma`, so :math:`z = 0` is the *mean image* (mid-grey
for EfficientNet, whose :math:`\\mu = 0.5`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from matplotlib.figure import Figure
from torch import nn

from . import assets, core, models, plotting, widgets

__all__ = [
    # filters
    "filters_as_images",
    "first_layer_filters",
    "image_patches",
    "ica_filters",
    "gabor_bank",
    "gabor_similarity",
    "response_kurtosis",
    # class models
    "colour_covariance",
    "fourier_precondition",
    "clip_small",
    "class_visualization",
    "crop_recognition",
    # attribution
    "input_gradient",
    "saliency",
    "smooth_grad",
    "integrated_gradients",
    "guided_backprop",
    "grad_cam",
    "guided_grad_cam",
    "square",
    "mosaic",
    "mass_share",
    # DeepDream and inversion
    "deepdream",
    "invert_features",
    "layout_similarity",
    # embeddings
    "random_crops",
    "embed_2d",
    "nearest_neighbors",
    "label_agreement",
    # figures and Try it
    "show_maps",
    "show_embedding",
    "saliency_widget",
    "class_model_widget",
]

Target = int | Sequence[int] | torch.Tensor | tuple


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class _Target:
    """A target resolved for a batch: the class (or channel) index per image."""

    layer: str | None  # None: a class logit
    index: torch.Tensor  # (B,) long
    position: tuple[int, int] | None  # a single neuron's (row, col), or None for the whole channel

    def tiled(self, times: int, interleave: bool) -> _Target:
        index = self.index.repeat_interleave(times) if interleave else self.index.repeat(times)
        return replace(self, index=index)

    def part(self, start: int, stop: int) -> _Target:
        return replace(self, index=self.index[start:stop])


_TARGET_FORMS = "a class index (an int, or one per image), a channel (layer, k) or a neuron (layer, k, (row, col))"


def _resolve(target: Target, batch: int) -> _Target:
    """Check a target's form (not yet its range, which the forward pass tells) and give one index per image."""
    unit = isinstance(target, tuple) and len(target) in (2, 3) and isinstance(target[0], str)
    index = target[1] if unit else target
    if isinstance(index, (bool, str, float)) or not isinstance(index, (int, np.integer, Sequence, torch.Tensor)):
        raise TypeError(f"target must be {_TARGET_FORMS}; got {target!r}.")
    try:
        idx = torch.as_tensor(index).long().reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"target must be {_TARGET_FORMS}; got {target!r}.") from err
    if idx.numel() == 1:
        idx = idx.expand(batch)
    if idx.numel() != batch:
        raise ValueError(f"Got {idx.numel()} targets ({index!r}) for a batch of {batch} images; "
                         "give one int, or one per image.")
    position = None
    if unit and len(target) == 3:
        position = target[2]
        if not (isinstance(position, (tuple, list)) and len(position) == 2
                and all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in position)):
            raise TypeError(f"A neuron's position must be (row, col), two ints; got {position!r} in {target!r}.")
        position = (int(position[0]), int(position[1]))
    return _Target(target[0] if unit else None, idx, position)


def _check_range(index: torch.Tensor, count: int, what: str) -> None:
    bad = index[(index < 0) | (index >= count)]
    if bad.numel():
        raise ValueError(f"{what} target {bad[0].item()} is out of range: use 0..{count - 1} "
                         f"({count} to choose from).")


def _score(model: nn.Module, x: torch.Tensor, target: _Target) -> torch.Tensor:
    """Score per image (B,): the logit S_c(x), a channel's summed activation, or one neuron's activation."""
    if target.layer is None:
        logits = model(x)
        _check_range(target.index, logits.shape[1], "Class")
        return logits.gather(1, target.index[:, None].to(x.device))[:, 0]
    activation = core.capture(model, x, [target.layer])[target.layer]
    _check_range(target.index, activation.shape[1], f"{target.layer!r} channel")
    maps = activation[torch.arange(len(x)), target.index.to(x.device)]
    if target.position is None:
        return maps.reshape(len(x), -1).sum(1)
    row, col = target.position
    if maps.ndim != 3 or not (0 <= row < maps.shape[1] and 0 <= col < maps.shape[2]):
        size = "×".join(map(str, maps.shape[1:])) or "1"
        raise ValueError(f"Neuron position {target.position} is outside the {size} map of {target.layer!r}; "
                         "use rows and columns within it (core.layer_features shows the map's shape).")
    return maps[:, row, col]


def _gradient(model: nn.Module, x: torch.Tensor, target: _Target) -> torch.Tensor:
    """d score / d x for checked images x, inside inspection mode."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_score(model, x, target).sum(), x)
    return grad


def _gradients(model: nn.Module, x: torch.Tensor, target: _Target, batch_size: int) -> torch.Tensor:
    """:func:`_gradient` over a large batch, ``batch_size`` images at a time (bounded memory)."""
    with core.inspection_mode(model):
        return torch.cat([_gradient(model, x[i:i + batch_size], target.part(i, i + batch_size))
                          for i in range(0, len(x), batch_size)])


def _normaliser(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the model's input normalisation, each (C, 1, 1); (0, 1) if it has none."""
    norm = next((m for m in model.modules() if isinstance(m, models.Normalize)), None)
    if norm is None:
        one = torch.ones(1, 1, 1, device=core.model_device(model))
        return 0 * one, one
    return norm.mean, norm.std


def _first_conv(model: nn.Module) -> nn.Conv2d:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"The model ({type(model).__name__}) has no nn.Conv2d layer; these visualisations "
                         "need a convolutional network.")
    return conv


# --------------------------------------------------------------------------- filters


def filters_as_images(weight: torch.Tensor | np.ndarray) -> torch.Tensor:
    r"""Filters rescaled to [0, 1] one by one, for display.

    .. math::

        \tilde w_n = \frac{w_n - \min w_n}{\max w_n - \min w_n}

    per filter :math:`n`, so that every filter uses the whole grey or colour
    range (a constant filter becomes mid-grey).

    Parameters
    ----------
    weight : Tensor or array (N, C, k, k) or (N, k, k)

    Returns
    -------
    Tensor (N, C, k, k)
        On the CPU, values in [0, 1].

    Examples
    --------
    >>> filters_as_images(torch.tensor([[[-1.0, 0.0], [1.0, 3.0]]]))
    tensor([[[[0.0000, 0.2500],
              [0.5000, 1.0000]]]])
    """
    weight = torch.as_tensor(weight).detach().cpu().float()
    if weight.ndim == 3:
        weight = weight[:, None]
    if weight.ndim != 4:
        raise ValueError(f"weight must have shape (N, C, k, k) or (N, k, k), got {tuple(weight.shape)}.")
    low = weight.amin(dim=(1, 2, 3), keepdim=True)
    span = weight.amax(dim=(1, 2, 3), keepdim=True) - low
    return torch.where(span > 0, (weight - low) / span.clamp_min(1e-12), torch.full_like(weight, 0.5))


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The first convolution's filters (``net.conv_stem`` for EfficientNet), each rescaled to [0, 1].

    A first-layer filter acts on pixels, so it *is* a small image: the input
    patch of fixed norm that excites the unit most.

    Parameters
    ----------
    model : nn.Module
        Any model with an nn.Conv2d; the first one in ``model.modules()`` is used.

    Returns
    -------
    Tensor (C_out, C_in, k, k)
        :func:`filters_as_images` of the weights.

    References
    ----------
    .. [1] A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification with
       Deep Convolutional Neural Networks", NeurIPS 2012 (their Figure 3).

    Examples
    --------
    >>> first_layer_filters(models.MnistCNN()).shape
    torch.Size([16, 1, 3, 3])
    """
    return filters_as_images(_first_conv(core.check_model(model)).weight)


def image_patches(images: Sequence[torch.Tensor], size: int = 12, n: int = 20000, seed: int = 0) -> np.ndarray:
    r"""Random grey patches of natural images, each with its mean removed: the data of ICA.

    .. math:: p = x_{i:i+s,\; j:j+s} - \operatorname{mean}(x_{i:i+s,\; j:j+s})

    from the grey (channel mean) images, cycling through them, at uniformly
    random positions. No labels are involved.

    Parameters
    ----------
    images : sequence of Tensor (C, H, W) in [0, 1]
        H, W > ``size``.
    size : int, default=12
    n : int, default=20000
    seed : int, default=0

    Returns
    -------
    ndarray (n, size * size)

    Examples
    --------
    >>> image_patches([torch.rand(3, 20, 20)], size=4, n=10).shape
    (10, 16)
    """
    core.check_int(size, "size", minimum=2)
    core.check_int(n, "n")
    greys = [core.check_images(image, "images[i]", single=True)[0].mean(0).numpy() for image in images]
    if not greys or min(min(g.shape) for g in greys) <= size:
        raise ValueError(f"images must be a non-empty list of images larger than size={size} pixels.")
    rng = np.random.default_rng(core.check_int(seed, "seed", minimum=0))
    patches = np.empty((n, size * size))
    for k in range(n):
        grey = greys[k % len(greys)]
        i, j = rng.integers(0, grey.shape[0] - size), rng.integers(0, grey.shape[1] - size)
        patches[k] = grey[i:i + size, j:j + size].ravel()
    return patches - patches.mean(axis=1, keepdims=True)


def ica_filters(patches: np.ndarray, n_components: int = 64, seed: int = 0) -> np.ndarray:
    r"""Filters learned without labels: independent component analysis of image patches.

    FastICA first whitens the patches (PCA to ``n_components`` dimensions,
    unit variance), then finds the unmixing matrix :math:`W` whose outputs
    :math:`s = W p` are as non-Gaussian — as *sparse* — as possible:

    .. math::

        W^* = \arg\max_{W} \sum_n \big|\, \mathbb E\,[G(w_n^\top p)] - \mathbb E\,[G(\nu)] \big|^2,
        \qquad G(u) = \log\cosh u,\ \nu \sim \mathcal N(0, 1).

    On natural images the rows of :math:`W` (the filters, shown in pixel
    space) come out localised, oriented and band-pass: Gabor-like, as the
    simple cells of V1 and the first layer of a trained CNN.

    Parameters
    ----------
    patches : ndarray (N, s * s)
        From :func:`image_patches` (square patches).
    n_components : int, default=64
    seed : int, default=0

    Returns
    -------
    ndarray (n_components, s, s)
        One filter per component.

    References
    ----------
    .. [1] A. J. Bell, T. J. Sejnowski, "The 'independent components' of natural
       scenes are edge filters", Vision Research 1997.
    .. [2] A. Hyvärinen, E. Oja, "Independent component analysis: algorithms and
       applications", Neural Networks 2000.

    Examples
    --------
    >>> ica_filters(image_patches([torch.rand(3, 40, 40)], size=4, n=500), n_components=3).shape
    (3, 4, 4)
    """
    from sklearn.decomposition import FastICA

    patches = np.asarray(patches, dtype=np.float64)
    side = math.isqrt(patches.shape[1]) if patches.ndim == 2 else 0
    if patches.ndim != 2 or side * side != patches.shape[1]:
        raise ValueError(f"patches must be (N, s*s) square patches, got shape {patches.shape}.")
    core.check_int(n_components, "n_components", maximum=patches.shape[1])
    ica = FastICA(n_components=n_components, whiten="unit-variance", random_state=seed, max_iter=400, tol=1e-3)
    ica.fit(patches)
    return ica.components_.reshape(n_components, side, side)


def gabor_bank(size: int = 12, orientations: int = 8, wavelengths: Sequence[float] = (3, 4, 6, 9),
               sigmas: Sequence[float] = (1.5, 2.5, 4.0)) -> torch.Tensor:
    r"""A bank of Gabor filters: cosine gratings under Gaussian envelopes, centred in a square.

    .. math::

        g(u, v) = e^{-(u^2 + v^2) / 2\sigma^2} \cos\!\left( \frac{2\pi u'}{\lambda} + \varphi \right),
        \qquad u' = u \cos\theta + v \sin\theta,

    for every orientation :math:`\theta = \pi k / \text{orientations}`, wavelength
    :math:`\lambda`, envelope :math:`\sigma` and phase :math:`\varphi \in \{0, \pi/2\}`
    (even and odd), each made zero-mean and of unit norm.

    Parameters
    ----------
    size : int, default=12
    orientations : int, default=8
    wavelengths : sequence of float, default=(3, 4, 6, 9)
        In pixels.
    sigmas : sequence of float, default=(1.5, 2.5, 4)
        Envelope widths, in pixels.

    Returns
    -------
    Tensor (len(wavelengths) * len(sigmas) * orientations * 2, size, size)

    References
    ----------
    .. [1] J. G. Daugman, "Uncertainty relation for resolution in space, spatial
       frequency, and orientation optimized by two-dimensional visual cortical
       filters", JOSA A 1985.

    Examples
    --------
    >>> bank = gabor_bank(size=8, orientations=4, wavelengths=(4,), sigmas=(2,))
    >>> bank.shape, round(bank[0].sum().item(), 6), round(bank[0].norm().item(), 6)
    (torch.Size([8, 8, 8]), 0.0, 1.0)
    """
    core.check_int(size, "size", minimum=3)
    core.check_int(orientations, "orientations")
    v, u = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    bank = []
    for wavelength in wavelengths:
        for sigma in sigmas:
            for k in range(orientations):
                theta = math.pi * k / orientations
                along = u * math.cos(theta) + v * math.sin(theta)
                for phase in (0.0, math.pi / 2):
                    g = torch.exp(-(u**2 + v**2) / (2 * sigma**2)) * torch.cos(2 * math.pi * along / wavelength + phase)
                    g = g - g.mean()
                    bank.append(g / g.norm().clamp_min(1e-12))
    return torch.stack(bank)


def gabor_similarity(filters: torch.Tensor | np.ndarray, bank: torch.Tensor) -> torch.Tensor:
    r"""How Gabor-like each filter is: its best absolute cosine with a bank filter, over all shifts.

    .. math::

        \rho(w) = \max_{g \in \text{bank}} \; \max_{\delta} \;
        \frac{|\langle \bar w, \, g(\cdot - \delta) \rangle|}{\lVert \bar w \rVert\, \lVert g \rVert}

    with :math:`\bar w` the zero-mean filter and shifts :math:`\delta` of up to
    half the filter's side (the bank's filters are centred; a learned filter may
    sit anywhere in its patch). 1 means the filter is a shifted bank filter.

    Parameters
    ----------
    filters : Tensor or array (N, s, s)
    bank : Tensor (M, k, k)
        From :func:`gabor_bank`, zero-mean with unit norm.

    Returns
    -------
    Tensor (N,)
        Values in [0, 1].

    Examples
    --------
    >>> bank = gabor_bank(size=8, orientations=4, wavelengths=(4,), sigmas=(2,))
    >>> gabor_similarity(bank[:2], bank).round(decimals=4)
    tensor([1., 1.])
    """
    filters = torch.as_tensor(np.asarray(filters), dtype=torch.float32)
    if filters.ndim != 3 or bank.ndim != 3:
        raise ValueError(f"filters must be (N, s, s) and bank (M, k, k); got {tuple(filters.shape)} "
                         f"and {tuple(bank.shape)}.")
    filters = filters - filters.mean(dim=(1, 2), keepdim=True)
    filters = filters / filters.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    pad = filters.shape[-1] // 2
    # conv2d is a cross-correlation: <w, g shifted by delta> for every shift delta at once.
    cosines = F.conv2d(F.pad(filters[:, None], (pad,) * 4), bank[:, None].float())
    return cosines.abs().flatten(1).amax(1).clamp(max=1.0)


def response_kurtosis(filters: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    r"""Excess kurtosis of each filter's responses over all positions of some images: how sparse they are.

    .. math::

        \kappa_n = \frac{\mathbb E[(r_n - \bar r_n)^4]}{\big(\mathbb E[(r_n - \bar r_n)^2]\big)^2} - 3,
        \qquad r_n = w_n \star x .

    A Gaussian response has :math:`\kappa = 0`; a sparse one — mostly near zero,
    sometimes large, as an edge detector's on natural images — has
    :math:`\kappa \gg 0`. Sparseness is the objective of ICA and sparse coding,
    so it compares filters learned without labels with a network's first layer.
    (:math:`\kappa` does not change when the images are shifted or scaled, so
    pixels or normalised pixels give the same value when the normalisation is
    the same for every channel.)

    Parameters
    ----------
    filters : Tensor (N, C, k, k)
    images : Tensor (B, C, H, W)

    Returns
    -------
    Tensor (N,)
        NaN for a filter whose response is (numerically) constant, e.g. all-zero weights.

    References
    ----------
    .. [1] B. A. Olshausen, D. J. Field, "Emergence of simple-cell receptive field
       properties by learning a sparse code for natural images", Nature 1996.

    Examples
    --------
    >>> edge = torch.tensor([[[[-1.0, 1.0]]]])
    >>> step = torch.zeros(1, 1, 1, 400); step[..., 200:] = 1
    >>> response_kurtosis(edge, step) > 100   # one large response among 399 zeros
    tensor([True])
    """
    filters = torch.as_tensor(filters).float()
    images = core.check_images(images, "images", channels=filters.shape[1] if filters.ndim == 4 else None)
    if filters.ndim != 4:
        raise ValueError(f"filters must have shape (N, C, k, k), got {tuple(filters.shape)}.")
    moments = []
    for chunk in filters.split(8):  # a few filters at a time: the responses of all of them can be large
        responses = F.conv2d(images, chunk).transpose(0, 1).flatten(1).double()  # (8, B*h*w)
        centred = responses - responses.mean(1, keepdim=True)
        moments.append(torch.stack([centred.pow(2).mean(1), centred.pow(4).mean(1)], dim=1))
    variance, fourth = torch.cat(moments).T
    kurtosis = fourth / variance.pow(2) - 3
    dead = variance <= 1e-12 * variance.max()  # a (numerically) zero filter: its response is constant
    return torch.where(dead, torch.nan, kurtosis).float()


# --------------------------------------------------------------------------- class models


@functools.lru_cache(maxsize=1)
def _photo_pixel_covariance() -> torch.Tensor:
    pixels = torch.cat([assets.load_image(name, size=64).reshape(3, -1) for name in assets.PHOTOS], dim=1)
    return torch.cov(pixels)


def colour_covariance(model: nn.Module) -> torch.Tensor:
    r"""Covariance of the course photos' colours in the model's normalised units.

    .. math:: \Sigma_{kl} = \frac{\operatorname{Cov}(x_k, x_l)}{\sigma_k \sigma_l}

    over all pixels of :data:`assets.PHOTOS` (:math:`\sigma_k` the model's
    normalisation). Natural colours are strongly correlated — mostly brightness
    — and :func:`fourier_precondition` uses :math:`\Sigma` to move an image
    along natural colour directions. A one-channel model gets the variance of
    grey values, (1, 1).

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    Tensor (C, C)
        Symmetric, positive definite.

    Examples
    --------
    >>> colour_covariance(models.MnistCNN()).shape
    torch.Size([1, 1])
    """
    _, std = _normaliser(core.check_model(model))
    cov = _photo_pixel_covariance().to(std.device)
    if _first_conv(model).in_channels == 1:
        cov = cov.mean().reshape(1, 1)  # the variance of the grey value (x_r + x_g + x_b) / 3
    scale = std.reshape(-1).expand(cov.shape[0])
    return cov / (scale[:, None] * scale[None, :])


def fourier_precondition(grad: torch.Tensor, covariance: torch.Tensor, decay: float = 2.0) -> torch.Tensor:
    r"""The gradient filtered as gradient ascent in a decorrelated Fourier parameterisation would move the image.

    Distill's Feature Visualization writes the image as :math:`z = P\theta`:
    Fourier coefficients scaled by :math:`1/|f|` (the amplitude spectrum of
    natural images) and colours mixed by a square root of their covariance.
    A gradient step on :math:`\theta` moves :math:`z` by :math:`P P^\top \nabla_z`,
    so ascending in that parameterisation is ascending in pixels with the gradient

    .. math::

        g' = \Sigma \; \mathcal F^{-1}\!\left[ \frac{\mathcal F[g](f)}{\max(|f|, 1/N)^{d}} \right],

    with :math:`d = 2` for Distill's :math:`1/|f|` scaling: low frequencies
    and natural colour directions move fastest, the high-frequency patterns
    that fool a network barely move.

    Parameters
    ----------
    grad : Tensor (B, C, H, W)
        A gradient with respect to the normalised image.
    covariance : Tensor (C, C)
        From :func:`colour_covariance`.
    decay : float, default=2.0
        Exponent :math:`d` of the frequency weighting (0: colour mixing only).

    Returns
    -------
    Tensor (B, C, H, W)

    References
    ----------
    .. [1] C. Olah, A. Mordvintsev, L. Schubert, "Feature Visualization", Distill 2017
       (section "Preconditioning and Parameterization").

    Examples
    --------
    >>> g = torch.zeros(1, 1, 8, 8); g[0, 0, 0, 0] = 1   # a one-pixel spike ...
    >>> smooth = fourier_precondition(g, torch.eye(1))
    >>> bool(smooth.abs().max() < 0.5 * smooth.sum())    # ... is spread over the image
    True
    """
    if grad.ndim != 4 or covariance.shape != (grad.shape[1], grad.shape[1]):
        raise ValueError(f"grad must be (B, C, H, W) and covariance (C, C); got {tuple(grad.shape)} and "
                         f"{tuple(covariance.shape)}.")
    core.check_number(decay, "decay")
    height, width = grad.shape[-2:]
    fy = torch.fft.fftfreq(height, device=grad.device, dtype=grad.dtype)[:, None]
    fx = torch.fft.rfftfreq(width, device=grad.device, dtype=grad.dtype)[None, :]
    weight = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / max(height, width)) ** -decay
    filtered = torch.fft.irfft2(torch.fft.rfft2(grad) * weight, s=(height, width))
    return torch.einsum("kl,blhw->bkhw", covariance.to(grad), filtered)


def clip_small(z: torch.Tensor, score_grad: torch.Tensor, norm_percentile: float = 0.0,
               contribution_percentile: float = 0.0) -> torch.Tensor:
    r"""Yosinski et al.'s clipping: set to the mean image the pixels of small norm or of small contribution.

    Per image, a pixel :math:`(i, j)` of the normalised image :math:`z` is set
    to zero (the mean image) when its norm :math:`\lVert z_{:,ij} \rVert` or its
    contribution

    .. math:: c_{ij} = \Big| \sum_k z_{kij}\, \frac{\partial S}{\partial z_{kij}} \Big|

    (the first-order change of the score if the pixel were set to zero) lies
    below the given percentile of that image's values.

    Parameters
    ----------
    z : Tensor (B, C, H, W)
        Normalised image.
    score_grad : Tensor (B, C, H, W)
        :math:`\partial S / \partial z`.
    norm_percentile, contribution_percentile : float, default=0
        In [0, 100); 0 switches that clipping off.

    Returns
    -------
    Tensor (B, C, H, W)

    References
    ----------
    .. [1] J. Yosinski, J. Clune, A. Nguyen, T. Fuchs, H. Lipson, "Understanding
       Neural Networks Through Deep Visualization", ICML workshop 2015.

    Examples
    --------
    >>> z = torch.tensor([[[[0.1, 2.0], [3.0, 4.0]]]])
    >>> clip_small(z, torch.ones_like(z), norm_percentile=30)
    tensor([[[[0., 2.],
              [3., 4.]]]])
    """
    keep = torch.ones_like(z[:, :1], dtype=torch.bool)
    for value, percentile, name in ((z.norm(dim=1, keepdim=True), norm_percentile, "norm_percentile"),
                                    ((z * score_grad).sum(1, keepdim=True).abs(), contribution_percentile,
                                     "contribution_percentile")):
        if core.check_number(percentile, name, high=100.0) >= 100:
            raise ValueError(f"{name} must be below 100 (it would clip every pixel), got {percentile}.")
        if percentile > 0:
            threshold = torch.quantile(value.flatten(1), percentile / 100, dim=1)
            keep &= value >= threshold[:, None, None, None]
    return z * keep


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = min(max(1, math.ceil(3 * sigma)), (min(image.shape[-2:]) - 1) // 2)
    return TF.gaussian_blur(image, 2 * radius + 1, sigma) if radius >= 1 else image


def _random_shift(jitter: int, generator: torch.Generator) -> list[int]:
    return torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()


def _class_model_size(model: nn.Module, size: int | None) -> int:
    default = getattr(model, "input_size", 28 if isinstance(model, models.MnistCNN) else 224)
    return core.check_int(size if size is not None else default, "size", minimum=8)


def _class_model_targets(model: nn.Module, target: Target) -> tuple[_Target, bool]:
    """The resolved target (one image per entry) and whether a single image was asked for."""
    index = target[1] if isinstance(target, tuple) and target and isinstance(target[0], str) else target
    single = isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0)
    return _resolve(target, 1 if single or not hasattr(index, "__len__") else len(index)), single


def _check_ascent_settings(steps, lr, l2, blur_every, blur_sigma, clip_norm, clip_contribution, jitter,
                           noise) -> None:
    core.check_int(steps, "steps")
    core.check_int(blur_every, "blur_every", minimum=0)
    core.check_int(jitter, "jitter", minimum=0)
    for value, name in ((lr, "lr"), (blur_sigma, "blur_sigma")):
        core.check_number(value, name, low_open=True)
    core.check_number(l2, "l2")
    core.check_number(noise, "noise")
    clip_small(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), clip_norm, clip_contribution)  # checks them


def class_visualization(
    model: nn.Module,
    target: Target,
    size: int | None = None,
    steps: int = 100,
    lr: float = 0.05,
    l2: float = 1e-3,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    clip_norm: float = 0.0,
    clip_contribution: float = 0.0,
    jitter: int = 0,
    fourier: bool = False,
    noise: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    r"""Class model by regularised gradient ascent on the normalised image.

    .. math::

        z^* = \arg\max_z \; S_c(\mu + \sigma z) - \lambda \lVert z \rVert_2^2

    (Simonyan et al.), with :math:`z` the *normalised* image, so the start
    :math:`z = 0` is the mean image and the :math:`L_2` penalty pulls towards
    it. Each step moves :math:`z` along the gradient (scaled by its mean
    magnitude, so ``lr`` is in normalised units) and keeps the pixels in [0, 1].
    Regularisers, each optional: a random shift of the image before every
    gradient (``jitter``), a Gaussian blur every ``blur_every`` steps, and
    :func:`clip_small` (Yosinski et al.); ``fourier`` ascends in Distill's
    decorrelated Fourier parameterisation (:func:`fourier_precondition`).

    Parameters
    ----------
    model : nn.Module
    target : int, sequence of ints, or a channel/neuron target
        A sequence optimises one image per entry, all in one batch.
    size : int, optional
        Side of the square image; default the model's ``input_size`` (224), 28 for the MNIST CNN.
    steps : int, default=100
    lr : float, default=0.05
    l2 : float, default=1e-3
        :math:`\lambda`.
    blur_every : int, default=0
        Blur every that many steps (0: never).
    blur_sigma : float, default=0.5
        In pixels.
    clip_norm, clip_contribution : float, default=0
        Percentiles for :func:`clip_small` (0: off).
    jitter : int, default=0
        Largest random shift, in pixels.
    fourier : bool, default=False
    noise : float, default=0
        Standard deviation of Gaussian noise added to the zero start (a network
        whose units are all silent at the mean image, as an untrained one, has
        zero gradient there).
    seed : int, default=0
    progress : bool, default=True

    Returns
    -------
    Tensor (C, size, size), or (N, C, size, size) for N targets
        Pixels in [0, 1].

    References
    ----------
    .. [1] K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks", 2014.
    .. [2] J. Yosinski et al., "Understanding Neural Networks Through Deep Visualization", 2015.
    .. [3] C. Olah, A. Mordvintsev, L. Schubert, "Feature Visualization", Distill 2017.

    Examples
    --------
    >>> class_visualization(models.MnistCNN(), target=3, steps=5, progress=False).shape
    torch.Size([1, 28, 28])
    """
    resolved, single = _class_model_targets(core.check_model(model), target)
    size = _class_model_size(model, size)
    _check_ascent_settings(steps=steps, lr=lr, l2=l2, blur_every=blur_every, blur_sigma=blur_sigma,
                           clip_norm=clip_norm, clip_contribution=clip_contribution, jitter=jitter, noise=noise)
    mean, std = _normaliser(model)
    low, high = -mean / std, (1 - mean) / std  # the pixel range [0, 1] in normalised units
    generator = torch.Generator().manual_seed(core.check_int(seed, "seed", minimum=0))
    shape = (len(resolved.index), _first_conv(model).in_channels, size, size)
    z = (noise * torch.randn(shape, generator=generator)).to(mean.device)
    covariance = colour_covariance(model) if fourier else None
    with core.inspection_mode(model):
        for step in core.progress_bar(range(steps), progress=progress, desc="class model"):
            shift = _random_shift(jitter, generator)
            score_grad = _gradient(model, mean + std * z.roll(shift, dims=(2, 3)), resolved)
            score_grad = score_grad.roll([-s for s in shift], dims=(2, 3)) * std  # chain rule: dS/dz = sigma dS/dx
            grad = score_grad - 2 * l2 * z
            if fourier:
                grad = fourier_precondition(grad, covariance)
            z = z + lr * grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            z = torch.maximum(torch.minimum(z, high), low)
            if blur_every and (step + 1) % blur_every == 0:
                z = _gaussian_blur(z, blur_sigma)
            z = clip_small(z, score_grad, clip_norm, clip_contribution)
    image = (mean + std * z).clamp(0, 1).detach()
    return image[0] if single else image


def crop_recognition(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
                     crops: int = 8, scale: float = 0.8, seed: int = 1) -> torch.Tensor:
    r"""Share of fresh random crops of each image that the model classifies as the image's target class.

    .. math::

        r_b = \frac1n \sum_{m=1}^{n}
              \mathbb 1\!\left[\arg\max_k S_k\big(\operatorname{resize}(\operatorname{crop}_m(x_b))\big) = c_b\right]

    Each crop keeps ``scale`` of the side at a random position and is resized
    back to the image's size. A class model that only fools the network at one
    precise framing fails; one that carries the class's features passes.

    Parameters
    ----------
    model : nn.Module
    images : Tensor (B, C, H, W) in [0, 1]
    targets : sequence of B ints
    crops : int, default=8
    scale : float, default=0.8
        Side of a crop over the image's side, in (0, 1].
    seed : int, default=1
        Seed of the crop positions (use one the optimisation did not use).

    Returns
    -------
    Tensor (B,)
        Values in [0, 1].

    Examples
    --------
    >>> crop_recognition(models.MnistCNN(), torch.rand(2, 1, 28, 28), [3, 5], crops=2).shape
    torch.Size([2])
    """
    x = core.check_images(images, "images", model=model)
    targets = core.check_labels(torch.as_tensor(targets).long(), len(x), name="targets")
    core.check_number(scale, "scale", high=1.0, low_open=True)
    height, width = x.shape[-2:]
    side_h, side_w = max(1, round(scale * height)), max(1, round(scale * width))
    generator = torch.Generator().manual_seed(core.check_int(seed, "seed", minimum=0))
    hits = torch.zeros(len(x))
    for _ in range(core.check_int(crops, "crops")):
        i = torch.randint(0, height - side_h + 1, (1,), generator=generator).item()
        j = torch.randint(0, width - side_w + 1, (1,), generator=generator).item()
        crop = assets.resize(x[:, :, i:i + side_h, j:j + side_w], (height, width))
        hits += (core.predict(model, crop).cpu() == targets).float()
    return hits / crops


# --------------------------------------------------------------------------- attribution


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    r"""Plain backpropagation: the gradient of the target's score with respect to the pixels.

    .. math:: g = \frac{\partial S_c(x)}{\partial x}

    Parameters
    ----------
    model : nn.Module
        A course model taking [0, 1] pixels.
    x : Tensor (B, C, H, W) or (C, H, W)
        Images in [0, 1] (not modified).
    target : int, sequence of B ints, (layer, k) or (layer, k, (row, col))
        The class, channel or neuron whose score is differentiated.

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
    x = core.check_images(x, model=core.check_model(model))
    resolved = _resolve(target, len(x))
    with core.inspection_mode(model):
        return _gradient(model, x, resolved)


def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    r"""Saliency map of Simonyan et al.: the largest input-gradient magnitude over colour channels.

    .. math::

        M_{ij} = \max_{k} \left| \frac{\partial S_c(x)}{\partial x_{k,i,j}} \right|

    where :math:`S_c` is the *unnormalised* score (the logit, not the softmax,
    whose gradient would also reward lowering the other classes).

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    target : int, sequence of B ints, (layer, k) or (layer, k, (row, col))

    Returns
    -------
    Tensor (B, H, W)
        Non-negative.

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


def smooth_grad(model: nn.Module, x: torch.Tensor, target: Target, n_samples: int = 16, sigma: float = 0.15,
                seed: int = 0, batch_size: int = 4) -> torch.Tensor:
    r"""SmoothGrad: the saliency map averaged over noisy copies of the image.

    .. math::

        \hat M_{ij} = \max_k \frac1n \sum_{m=1}^{n}
        \left| \frac{\partial S_c}{\partial x_{kij}}\big(x + \varepsilon_m\big) \right|,
        \qquad \varepsilon_m \sim \mathcal N(0, \sigma^2 I)

    The gradient of a ReLU network jumps from pixel to pixel; averaging over a
    neighbourhood of the image removes that noise and keeps what is stable.
    Smilkov et al. recommend :math:`\sigma` at 10–20 % of the pixel range
    (here the range is 1). The noise is drawn at once for all images (image
    ``b``'s samples are rows ``b n … b n + n - 1``, as in captum's NoiseTunnel),
    then differentiated ``batch_size`` at a time.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    target : int, sequence of B ints, (layer, k) or (layer, k, (row, col))
    n_samples : int, default=16
    sigma : float, default=0.15
    seed : int, default=0
    batch_size : int, default=4
        Noisy copies differentiated at once (memory grows with it).

    Returns
    -------
    Tensor (B, H, W)

    References
    ----------
    .. [1] D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg, "SmoothGrad:
       removing noise by adding noise", 2017.

    Examples
    --------
    >>> smooth_grad(models.MnistCNN(), torch.rand(2, 1, 28, 28), 3, n_samples=4).shape
    torch.Size([2, 28, 28])
    """
    x = core.check_images(x, model=core.check_model(model))
    resolved = _resolve(target, len(x))
    n = core.check_int(n_samples, "n_samples")
    core.check_number(sigma, "sigma")
    generator = torch.Generator().manual_seed(core.check_int(seed, "seed", minimum=0))
    noise = torch.randn((len(x) * n, *x.shape[1:]), generator=generator).to(x.device)
    noisy = x.repeat_interleave(n, dim=0) + sigma * noise
    grads = _gradients(model, noisy, resolved.tiled(n, interleave=True), core.check_int(batch_size, "batch_size"))
    return grads.abs().reshape(len(x), n, *x.shape[1:]).mean(1).amax(1)


def _baseline(model: nn.Module, x: torch.Tensor, baseline: float | torch.Tensor | None) -> torch.Tensor:
    if baseline is None:
        return _normaliser(model)[0].expand_as(x[0]).expand_as(x).clone()
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, core.check_number(baseline, "baseline", high=1.0))
    base = core.check_images(baseline, "baseline", model=model)
    if base.shape[1:] != x.shape[1:] or len(base) not in (1, len(x)):
        raise ValueError(f"baseline must be one image or one per image of shape {tuple(x.shape[1:])}, "
                         f"got {tuple(base.shape)}.")
    return base.expand_as(x)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target,
                         baseline: float | torch.Tensor | None = None, steps: int = 32,
                         batch_size: int = 4) -> torch.Tensor:
    r"""Integrated gradients of Sundararajan et al.: the gradient integrated along the line from a baseline.

    .. math::

        \mathrm{IG}_i(x) = (x_i - x'_i) \int_0^1
                           \frac{\partial S_c}{\partial x_i}\big(x' + \alpha (x - x')\big)\, d\alpha
        \;\approx\; (x_i - x'_i)\, \frac1m \sum_{k=1}^{m}
                    \frac{\partial S_c}{\partial x_i}\Big(x' + \tfrac km (x - x')\Big)

    (a right Riemann sum). *Completeness*: the attributions add up to
    :math:`S_c(x) - S_c(x')`, the change of the score from the baseline to the
    image (exactly as :math:`m \to \infty`).

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    target : int, sequence of B ints, (layer, k) or (layer, k, (row, col))
    baseline : float, Tensor (C, H, W) / (1 or B, C, H, W) in [0, 1], or None
        :math:`x'`. None: the mean image (zero after the model's
        normalisation, mid-grey for EfficientNet); a float: that constant
        grey (0 is black).
    steps : int, default=32
        :math:`m`.
    batch_size : int, default=4
        Path points differentiated at once (memory grows with it).

    Returns
    -------
    Tensor (B, C, H, W)
        Signed attribution per pixel and channel.

    References
    ----------
    .. [1] M. Sundararajan, A. Taly, Q. Yan, "Axiomatic Attribution for Deep
       Networks", ICML 2017.

    Examples
    --------
    >>> integrated_gradients(models.MnistCNN(), torch.rand(1, 1, 28, 28), 3, steps=4).shape
    torch.Size([1, 1, 28, 28])
    """
    x = core.check_images(x, model=core.check_model(model))
    resolved = _resolve(target, len(x))
    steps = core.check_int(steps, "steps")
    base = _baseline(model, x, baseline)
    alphas = torch.arange(1, steps + 1, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1, 1) / steps
    path = (base + alphas * (x - base)).flatten(0, 1)  # (steps * B, C, H, W), alpha-major
    grads = _gradients(model, path, resolved.tiled(steps, interleave=False), core.check_int(batch_size, "batch_size"))
    return (x - base) * grads.reshape(steps, *x.shape).mean(0)


class _PositiveGradientOnly(torch.autograd.Function):
    """Identity forward; backward keeps the positive part of the gradient."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


def _guided_hook(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    # Placed after a ReLU y = max(x, 0) (or a ReLU6 y = min(max(x, 0), 6)), whose own
    # backward multiplies by 1[x > 0] (or 1[0 < x < 6]); together they give the guided
    # rule R_in = 1[unit passes] * max(R_out, 0). A forward hook fires at every call,
    # so a ReLU module that a ResNet block uses twice is guided at both places.
    return _PositiveGradientOnly.apply(output)


@contextmanager
def _guided_relus(model: nn.Module) -> Iterator[None]:
    """The guided backward rule on every nn.ReLU and nn.ReLU6 of ``model`` while inside the block."""
    relus = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if not relus:
        raise ValueError(f"The model ({type(model).__name__}) has no nn.ReLU or nn.ReLU6 modules; guided "
                         "backprop changes the backward pass of ReLUs.")
    handles = [relu.register_forward_hook(_guided_hook) for relu in relus]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    r"""Guided backpropagation of Springenberg et al.

    The gradient of the target's score is propagated back as usual, except
    through every ReLU, where only positive gradients that reach units which
    passed their input go on:

    .. math::

        R^{(l)} = \mathbb{1}\left[x^{(l)} > 0\right] \cdot \max\left(R^{(l+1)}, 0\right)

    (plain backprop keeps the first factor only; the "deconvnet" of Zeiler and
    Fergus the second only). EfficientNet's activation is ReLU6,
    :math:`\min(\max(x, 0), 6)`, inside timm's ``BatchNormAct2d``; there the
    first factor is :math:`\mathbb 1[0 < x^{(l)} < 6]`. The model is not edited:
    forward hooks on the nn.ReLU and nn.ReLU6 modules are added and removed.

    Parameters
    ----------
    model : nn.Module
        With nn.ReLU or nn.ReLU6 modules (in-place ones and ones used twice are handled).
    x : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    target : int, sequence of B ints, (layer, k) or (layer, k, (row, col))
        A class, a channel summed over positions, or a single neuron such as
        ``("net.blocks.4", 17, (5, 6))``.

    Returns
    -------
    Tensor (B, C, H, W)
        The guided gradient with respect to the pixels.

    References
    ----------
    .. [1] J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving
       for Simplicity: The All Convolutional Net", ICLR workshop 2015.

    Examples
    --------
    >>> guided_backprop(models.MnistCNN(), torch.rand(1, 1, 28, 28), ("conv2", 5, (3, 4))).shape
    torch.Size([1, 1, 28, 28])
    """
    with _guided_relus(core.check_model(model)):
        return input_gradient(model, x, target)


@contextmanager
def _recording(model: nn.Module, layer: str) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of module ``layer`` (first call) during the forward passes inside the block."""
    store: dict[str, torch.Tensor] = {}
    handle = core.get_module(model, layer).register_forward_hook(lambda _m, _i, out: store.setdefault("out", out))
    try:
        yield store
    finally:
        handle.remove()


def grad_cam(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
    r"""Grad-CAM of Selvaraju et al.: a layer's maps weighted by their average gradient, upsampled.

    .. math::

        \alpha_k = \frac1{hw} \sum_{i,j} \frac{\partial S_c}{\partial A^k_{ij}}, \qquad
        L = \operatorname{ReLU}\Big(\sum_k \alpha_k A^k\Big)

    with :math:`A` the output of ``layer`` (h × w maps), then bilinearly
    upsampled to the image's size. The last convolutional layer (``"net.bn2"``
    for EfficientNet, after its ReLU6) has the most class-specific maps.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    target : int, sequence of B ints, (layer, k) or (layer, k, (row, col))
    layer : str
        A module whose output is a (B, K, h, w) map, computed before the target.

    Returns
    -------
    Tensor (B, H, W)
        Non-negative, unnormalised.

    References
    ----------
    .. [1] R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra,
       "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
       Localization", ICCV 2017.

    Examples
    --------
    >>> grad_cam(models.MnistCNN(), torch.rand(2, 1, 28, 28), 3, "relu2").shape
    torch.Size([2, 28, 28])
    """
    x = core.check_images(x, model=core.check_model(model))
    resolved = _resolve(target, len(x))
    with core.inspection_mode(model), _recording(model, layer) as store:
        score = _score(model, x.requires_grad_(True), resolved)
        activation = store.get("out")
        if not isinstance(activation, torch.Tensor) or activation.ndim != 4:
            raise ValueError(f"Layer {layer!r} must output (B, K, h, w) maps before the target is computed; "
                             "choose a convolutional layer at or before it, e.g. 'net.bn2'.")
        (grad,) = torch.autograd.grad(score.sum(), activation, allow_unused=True)
    if grad is None:
        raise ValueError(f"The target does not depend on layer {layer!r}; choose a layer before it.")
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
    r"""Guided Grad-CAM: guided backprop (fine detail) times Grad-CAM (where the class is).

    .. math:: G_{kij} = \mathrm{GB}_{kij} \cdot L_{ij}

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    target : int, sequence of B ints, (layer, k) or (layer, k, (row, col))
    layer : str
        The Grad-CAM layer (see :func:`grad_cam`).

    Returns
    -------
    Tensor (B, C, H, W)

    References
    ----------
    .. [1] R. R. Selvaraju et al., "Grad-CAM", ICCV 2017.

    Examples
    --------
    >>> guided_grad_cam(models.MnistCNN(), torch.rand(2, 1, 28, 28), 3, "relu2").shape
    torch.Size([2, 1, 28, 28])
    """
    return guided_backprop(model, x, target) * grad_cam(model, x, target, layer)[:, None]


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """The largest centred square of an image, resized to ``size`` × ``size``.

    Parameters
    ----------
    image : Tensor (C, H, W) in [0, 1]
    size : int

    Returns
    -------
    Tensor (C, size, size)

    Examples
    --------
    >>> square(torch.rand(3, 30, 50), 16).shape
    torch.Size([3, 16, 16])
    """
    image = core.check_images(image, "image", single=True)[0]
    core.check_int(size, "size", minimum=8)
    side = min(image.shape[-2:])
    top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
    return assets.resize(image[:, top:top + side, left:left + side], (size, size))


def mosaic(images: Sequence[torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four images in a 2 × 2 grid, each centre-cropped to a square, and the mask of each quadrant.

    A test of localisation with honest object masks: each image's class
    lives in its own quadrant, so a class's explanation should fall there.

    Parameters
    ----------
    images : sequence of 4 Tensors (C, H, W) in [0, 1]
    size : int
        Side of one quadrant.

    Returns
    -------
    grid : Tensor (1, C, 2 size, 2 size)
    masks : Tensor (4, 2 size, 2 size) of bool
        Quadrant of images[0] (top left), [1] (top right), [2], [3] (bottom row).

    Examples
    --------
    >>> grid, masks = mosaic([torch.rand(3, 10, 12)] * 4, 8)
    >>> grid.shape, masks.sum((1, 2)).tolist()
    (torch.Size([1, 3, 16, 16]), [64, 64, 64, 64])
    """
    if len(images) != 4:
        raise ValueError(f"mosaic takes 4 images, got {len(images)}.")
    squares = [square(image, size) for image in images]
    grid = torch.cat([torch.cat(squares[:2], dim=2), torch.cat(squares[2:], dim=2)], dim=1)[None]
    masks = torch.zeros(4, 2 * size, 2 * size, dtype=torch.bool)
    for k in range(4):
        row, col = divmod(k, 2)
        masks[k, row * size:(row + 1) * size, col * size:(col + 1) * size] = True
    return grid, masks


def mass_share(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""Share of each map's total mass that lies inside its mask.

    .. math:: s_b = \frac{\sum_{ij} m_{bij}\, M_{bij}}{\sum_{ij} m_{bij}}

    (0 for an all-zero map).

    Parameters
    ----------
    maps : Tensor (B, H, W)
        Non-negative maps (saliency, Grad-CAM).
    masks : Tensor (B, H, W) or (H, W) of bool

    Returns
    -------
    Tensor (B,)

    Examples
    --------
    >>> mass_share(torch.tensor([[[3.0, 1.0]]]), torch.tensor([[True, False]]))
    tensor([0.7500])
    """
    if maps.ndim != 3 or masks.shape[-2:] != maps.shape[-2:] or (maps < 0).any():
        raise ValueError(f"maps must be non-negative (B, H, W) and masks (B or 1, H, W) of the same size; got "
                         f"{tuple(maps.shape)} and {tuple(masks.shape)}.")
    inside = (maps * masks.to(maps.device)).flatten(1).sum(1)
    return inside / maps.flatten(1).sum(1).clamp_min(1e-30)


# --------------------------------------------------------------------------- DeepDream and feature inversion


def deepdream(model: nn.Module, x: torch.Tensor, layer: str, steps: int = 10, lr: float = 0.02, octaves: int = 3,
              octave_scale: float = 1.4, jitter: int = 4, seed: int = 0, progress: bool = True) -> torch.Tensor:
    r"""DeepDream (Mordvintsev et al.): amplify whatever layer ``layer`` already sees in an image.

    .. math::

        x^* = \arg\max_x \; \tfrac12 \sum_i f_i(x)^2,
        \qquad \frac{\partial}{\partial f}\,\tfrac12 \lVert f \rVert^2 = f,

    so the backward pass starts at the layer with its own activation as the
    gradient. The image is dreamed at ``octaves`` scales, from the smallest
    (shrunk by ``octave_scale`` per octave) to the full size; going up, the
    dream is enlarged and the detail that the smaller copy of the photo lacked
    is added back. Each step shifts the image by a random jitter, moves it
    along the gradient (scaled by its mean magnitude, so ``lr`` is in pixel
    units) and keeps it in [0, 1].

    Parameters
    ----------
    model : nn.Module
    x : Tensor (C, H, W) or (1, C, H, W)
        The photo in [0, 1] (not modified).
    layer : str
        Module name, e.g. ``"net.blocks.4"``.
    steps : int, default=10
        Ascent steps per octave.
    lr : float, default=0.02
    octaves : int, default=3
    octave_scale : float, default=1.4
    jitter : int, default=4
        Largest random shift, in pixels.
    seed : int, default=0
    progress : bool, default=True

    Returns
    -------
    Tensor, same shape as ``x``
        The dream, in [0, 1].

    References
    ----------
    .. [1] A. Mordvintsev, C. Olah, M. Tyka, "Inceptionism: Going Deeper into
       Neural Networks", Google Research Blog, 2015.

    Examples
    --------
    >>> deepdream(models.MnistCNN(), torch.rand(1, 28, 28), "relu2", steps=2, octaves=1, progress=False).shape
    torch.Size([1, 28, 28])
    """
    image = core.check_images(x, model=core.check_model(model), single=True)
    core.get_module(model, layer)
    steps, octaves, jitter = (core.check_int(v, n, minimum=m) for v, n, m in
                              ((steps, "steps", 1), (octaves, "octaves", 1), (jitter, "jitter", 0)))
    core.check_number(lr, "lr", low_open=True)
    core.check_number(octave_scale, "octave_scale", low=1.0, low_open=True)
    height, width = image.shape[-2:]
    photos = [assets.resize(image, (max(8, round(height / octave_scale**k)), max(8, round(width / octave_scale**k))))
              for k in reversed(range(octaves))]
    generator = torch.Generator().manual_seed(core.check_int(seed, "seed", minimum=0))
    dream = photos[0]
    with core.inspection_mode(model), core.progress_bar(total=octaves * steps, desc="DeepDream",
                                                         progress=progress) as bar:
        for k, photo in enumerate(photos):
            if k:  # enlarge the dream; add back the detail the smaller photo lacked
                size = photo.shape[-2:]
                dream = (assets.resize(dream, size) + photo - assets.resize(photos[k - 1], size)).clamp(0, 1)
            for _ in range(steps):
                shift = _random_shift(jitter, generator)
                shifted = dream.roll(shift, dims=(2, 3)).requires_grad_(True)
                features = core.capture(model, shifted, [layer])[layer]
                (grad,) = torch.autograd.grad(features, shifted, grad_outputs=features.detach())
                grad = grad.roll([-s for s in shift], dims=(2, 3))
                dream = (dream + lr * grad / grad.abs().mean().clamp_min(1e-12)).clamp(0, 1).detach()
                bar.update()
    return dream.reshape(x.shape).to(x.device)


def invert_features(model: nn.Module, x: torch.Tensor, layer: str, steps: int = 200, tv_weight: float = 30.0,
                    beta: float = 2.0, lr: float = 0.05, seed: int = 0, progress: bool = True) -> torch.Tensor:
    r"""Reconstruct an image from its features at ``layer`` (Mahendran and Vedaldi).

    .. math::

        x^* = \arg\min_{x \in [0,1]^{C\times H\times W}}
              \frac{\lVert \Phi(x) - \Phi(x_0) \rVert^2}{\lVert \Phi(x_0) \rVert^2}
              + \frac{\lambda_{V}}{HW}\, R_{V^\beta}(x)

    with :math:`\Phi` the activation of ``layer`` and :func:`core.total_variation`
    as the prior :math:`R_{V^\beta}`. Starts from the mean image plus weak
    seeded noise, minimises with Adam and keeps ``x`` in [0, 1]. What the
    features do not pin down is filled in by the prior: the deeper the layer,
    the less of the image comes back.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (C, H, W) or (1, C, H, W)
        The image :math:`x_0` in [0, 1] (not modified).
    layer : str
        Module name, e.g. ``"net.blocks.3"``.
    steps : int, default=200
    tv_weight : float, default=30
        :math:`\lambda_V`, the weight of the prior per pixel.
    beta : float, default=2.0
    lr : float, default=0.05
        Adam's learning rate, in pixel units.
    seed : int, default=0
        Seed of the starting noise.
    progress : bool, default=True

    Returns
    -------
    Tensor, same shape as ``x``
        The reconstruction, values in [0, 1].

    References
    ----------
    .. [1] A. Mahendran, A. Vedaldi, "Understanding Deep Image Representations
       by Inverting Them", CVPR 2015.

    Examples
    --------
    >>> invert_features(models.MnistCNN(), torch.rand(1, 28, 28), "relu1", steps=3, progress=False).shape
    torch.Size([1, 28, 28])
    """
    x0 = core.check_images(x, model=core.check_model(model), single=True)
    core.get_module(model, layer)
    steps = core.check_int(steps, "steps")
    core.check_number(tv_weight, "tv_weight")
    core.check_number(beta, "beta", low_open=True)
    core.check_number(lr, "lr", low_open=True)
    generator = torch.Generator().manual_seed(core.check_int(seed, "seed", minimum=0))
    mean, std = _normaliser(model)
    start = mean + 0.1 * std * torch.randn(x0.shape, generator=generator).to(x0.device)
    recon = start.clamp(0, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([recon], lr=lr)
    pixels = x0.shape[-1] * x0.shape[-2]
    with core.inspection_mode(model):
        target = core.capture(model, x0, [layer])[layer].detach()
        for _ in core.progress_bar(range(steps), progress=progress, desc=f"inverting {layer}"):
            features = core.capture(model, recon, [layer])[layer]
            loss = (features - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)
            loss = loss + tv_weight / pixels * core.total_variation(recon, beta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                recon.clamp_(0, 1)
    return recon.detach().reshape(x.shape).to(x.device)


def layout_similarity(a: torch.Tensor, b: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    r"""How well two images agree in layout: the correlation of their smoothed edge-orientation fields.

    For the grey image :math:`I` with gradient :math:`(I_x, I_y) = |\nabla I|(\cos\theta, \sin\theta)`,
    the doubled-angle orientation field

    .. math::

        v = G_\sigma * \big( I_x^2 - I_y^2,\; 2 I_x I_y \big)
          = G_\sigma * |\nabla I|^2 (\cos 2\theta,\; \sin 2\theta)

    (the structure tensor's orientation part, blurred by a Gaussian :math:`G_\sigma`)
    says where the edges are and which way they run, but not which side is
    darker: an edge and a line drawn along it agree. :math:`\rho` is the Pearson
    correlation of the two fields over pixels and both components: 1 for the
    same contours, about 0 for unrelated images or noise.

    Parameters
    ----------
    a, b : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    sigma : float, default=2.0
        Blur of the field, in pixels.

    Returns
    -------
    Tensor (B,)

    Examples
    --------
    >>> square = torch.zeros(1, 32, 32); square[:, 8:24, 8:24] = 1
    >>> same, moved = layout_similarity(square, 1 - square), layout_similarity(square, square.roll(8, 1))
    >>> round(same.item(), 4), moved.item() < 0.5
    (1.0, True)
    """
    a, b = core.check_images(a, "a"), core.check_images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    core.check_number(sigma, "sigma", low_open=True)

    def orientation(image: torch.Tensor) -> torch.Tensor:
        grey = image.mean(1, keepdim=True)
        dx, dy = grey[..., :-1, 1:] - grey[..., :-1, :-1], grey[..., 1:, :-1] - grey[..., :-1, :-1]
        field = _gaussian_blur(torch.cat([dx**2 - dy**2, 2 * dx * dy], dim=1), sigma).flatten(1)
        return field - field.mean(1, keepdim=True)

    va, vb = orientation(a), orientation(b)
    return (va * vb).sum(1) / (va.norm(dim=1) * vb.norm(dim=1)).clamp_min(1e-12)


# --------------------------------------------------------------------------- embeddings and neighbours


def random_crops(images: Sequence[torch.Tensor], per_image: int, size: int, scale: tuple[float, float] = (0.25, 0.8),
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Random square crops of each image, randomly mirrored, resized to ``size``: many views of few photos.

    A crop's side is :math:`\sqrt{s}` times the image's shorter side, with the
    area share :math:`s` uniform in ``scale``; its position is uniform.

    Parameters
    ----------
    images : sequence of Tensor (C, H, W) in [0, 1]
    per_image : int
    size : int
    scale : (float, float), default=(0.25, 0.8)
    seed : int, default=0

    Returns
    -------
    crops : Tensor (len(images) * per_image, C, size, size)
    source : Tensor (len(images) * per_image,) of int
        Index of the image each crop comes from.

    Examples
    --------
    >>> crops, source = random_crops([torch.rand(3, 40, 50), torch.rand(3, 30, 30)], 3, 16)
    >>> crops.shape, source.tolist()
    (torch.Size([6, 3, 16, 16]), [0, 0, 0, 1, 1, 1])
    """
    core.check_int(per_image, "per_image")
    core.check_int(size, "size", minimum=8)
    low, high = scale
    core.check_number(low, "scale[0]", high=1.0, low_open=True)
    core.check_number(high, "scale[1]", low=low, high=1.0)
    generator = torch.Generator().manual_seed(core.check_int(seed, "seed", minimum=0))
    crops, source = [], []
    for n, image in enumerate(images):
        image = core.check_images(image, "images[i]", single=True)[0]
        height, width = image.shape[-2:]
        for _ in range(per_image):
            share = low + (high - low) * torch.rand(1, generator=generator).item()
            side = max(8, round(math.sqrt(share) * min(height, width)))
            i = torch.randint(0, height - side + 1, (1,), generator=generator).item()
            j = torch.randint(0, width - side + 1, (1,), generator=generator).item()
            crop = assets.resize(image[:, i:i + side, j:j + side], (size, size))
            crops.append(crop.flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else crop)
            source.append(n)
    return torch.stack(crops), torch.tensor(source)


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

    each axis signed so that its largest-magnitude score is positive (with
    fewer rows than dimensions, :math:`U` and :math:`\Sigma^2` come from the
    eigendecomposition of the Gram matrix :math:`(X - \bar X)(X - \bar X)^\top`).
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
        if len(X) <= X.shape[1]:
            # Fewer rows than dimensions (images as pixel vectors): U and Sigma^2 are the
            # eigenvectors and eigenvalues of the N x N Gram matrix, far smaller than V.
            eigvals, eigvecs = np.linalg.eigh(centred @ centred.T)
            Y = eigvecs[:, ::-1][:, :2] * np.sqrt(np.clip(eigvals[::-1][:2], 0, None))
        else:
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
    from scipy.spatial.distance import cdist

    X = _as_matrix(features)
    queries = np.asarray(queries, dtype=int).reshape(-1)
    core.check_int(k, "k")
    if k >= len(X) or queries.size == 0 or queries.min() < 0 or queries.max() >= len(X):
        raise ValueError(f"Need 0 <= queries < {len(X)} and k < {len(X)}; got queries={queries.tolist()}, k={k}.")
    distances = cdist(X[queries], X, "sqeuclidean")  # (queries, N), memory O(queries * N)
    distances[np.arange(len(queries)), queries] = np.inf
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def label_agreement(features: torch.Tensor | np.ndarray, labels: Sequence[int] | np.ndarray | torch.Tensor,
                    k: int = 5) -> float:
    r"""Share of each example's ``k`` nearest neighbours that carry its label, averaged over examples.

    .. math:: a = \frac1{Nk} \sum_{q=1}^N \sum_{n \in \mathrm{NN}_k(q)} \mathbb 1[y_n = y_q]

    Parameters
    ----------
    features : Tensor or array (N, ...)
    labels : sequence of N ints
    k : int, default=5

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> label_agreement(np.array([[0.0], [0.1], [5.0], [5.1]]), [0, 0, 1, 1], k=1)
    1.0
    """
    labels = np.asarray(torch.as_tensor(labels)).reshape(-1)
    if len(labels) != len(features):
        raise ValueError(f"Got {len(labels)} labels for {len(features)} feature rows; give one per row.")
    neighbours = nearest_neighbors(features, np.arange(len(labels)), k=k)
    return float((labels[neighbours] == labels[:, None]).mean())


# --------------------------------------------------------------------------- figures of this chapter


def _draw_panel(ax: plt.Axes, image: torch.Tensor, panel: torch.Tensor | None, overlay: bool) -> None:
    """One panel: the image, a non-negative map (heat map, optionally over the image) or a signed map."""
    ax.axis("off")
    if panel is None:
        ax.imshow(plotting.to_numpy_image(image), cmap="gray", vmin=0, vmax=1)
        return
    # Scale by the 99.5th percentile of |map|: a handful of extreme pixels would otherwise grey out the rest.
    top = torch.quantile(panel.abs().flatten().float(), 0.995).clamp_min(1e-12).item()
    if panel.shape[0] == 1 and panel.min() >= 0:
        if overlay:
            ax.imshow(plotting.to_numpy_image(image.mean(0)), cmap="gray", vmin=0, vmax=1)
        ax.imshow(panel[0].numpy(), cmap="jet" if overlay else "hot", vmin=0, vmax=top, alpha=0.5 if overlay else 1.0)
    else:  # signed: grey is zero
        ax.imshow(plotting.to_numpy_image(0.5 + panel / (2 * top)), cmap="gray", vmin=0, vmax=1)


def show_maps(images: torch.Tensor, maps: Sequence[torch.Tensor], row_titles: Sequence[str],
              titles: Sequence[str] | None = None, size: float = 2.2, overlay: Sequence[int] = ()) -> Figure:
    """Images in the first row, then one row per map (non-negative (B, H, W) or signed (B, C, H, W)).

    Each map is scaled by the 99.5th percentile :math:`q` of its magnitude.
    Non-negative maps are drawn as heat maps on [0, q] (over a grey copy of the
    image for the rows listed in ``overlay``, counted from 1 = the first map);
    signed maps as ``0.5 + g / (2 q)``, clipped, so that grey means zero. One
    image is laid out as a single row of panels.

    Parameters
    ----------
    images : Tensor (B, C, H, W) or (C, H, W) in [0, 1]
    maps : sequence of Tensor (B, H, W) or (B, C, H, W)
    row_titles : sequence of str
        One for the images, then one per map.
    titles : sequence of str, optional
        One per image (column).
    size : float, default=2.2
        Side of a panel in inches.
    overlay : sequence of int, default=()
        Rows (1 = the first map) drawn over the image.

    Returns
    -------
    Figure

    Examples
    --------
    >>> x = torch.rand(2, 1, 28, 28)
    >>> fig = show_maps(x, [saliency(models.MnistCNN(), x, 3)], ["digit", "saliency"])
    >>> len(fig.axes)
    4
    """
    images = images if images.ndim == 4 else images[None]
    rows = [None] + [m.detach().cpu() if m.ndim == 4 else m.detach().cpu()[:, None] for m in maps]
    if len(rows) != len(row_titles):
        raise ValueError(f"Got {len(row_titles)} row titles for {len(rows)} rows (the images, then each map).")
    single = len(images) == 1
    shape = (1, len(rows)) if single else (len(rows), len(images))
    fig, axes = plt.subplots(*shape, figsize=(size * shape[1], size * shape[0]), squeeze=False)
    for r, row in enumerate(rows):
        for b, image in enumerate(images.detach().cpu()):
            ax = axes[0, r] if single else axes[r, b]
            _draw_panel(ax, image, None if row is None else row[b], r in overlay)
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
                   ax: plt.Axes | None = None, names: Sequence[str] | None = None, legend: bool = True) -> Figure:
    """Scatter plot of a 2-D embedding, one colour per label, with a legend to the right of the axes.

    Parameters
    ----------
    points : ndarray (N, 2)
    labels : sequence of N ints
    title : str, default=""
    ax : Axes, optional
    names : sequence of str, optional
        ``names[label]`` in the legend (default: the label).
    legend : bool, default=True

    Returns
    -------
    Figure

    Examples
    --------
    >>> fig = show_embedding(np.random.rand(20, 2), np.arange(20) % 2, names=["even", "odd"])
    >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    ['even', 'odd']
    """
    labels = np.asarray(labels)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    for label in np.unique(labels):
        mask = labels == label
        ax.scatter(points[mask, 0], points[mask, 1], s=12, alpha=0.8, color=plt.cm.tab10(int(label) % 10),
                   label=names[label] if names is not None else str(label))
    ax.set(title=title, xticks=[], yticks=[])
    if legend:
        ax.legend(markerscale=1.5, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    ax.figure.tight_layout()
    return ax.figure


# ------------------------------------------------------------------------- Try it

_METHODS = ("saliency", "SmoothGrad", "integrated gradients", "guided backprop", "Grad-CAM", "guided Grad-CAM")


def _explain(model: nn.Module, x: torch.Tensor, target: int, method: str, layer: str) -> torch.Tensor:
    if method == "saliency":
        return saliency(model, x, target)
    if method == "SmoothGrad":
        return smooth_grad(model, x, target, n_samples=8)
    if method == "integrated gradients":
        return integrated_gradients(model, x, target, steps=16).abs().amax(1)
    if method == "guided backprop":
        return guided_backprop(model, x, target)
    if method == "Grad-CAM":
        return grad_cam(model, x, target, layer)
    return guided_grad_cam(model, x, target, layer)


def saliency_widget(model: nn.Module, images: torch.Tensor, names: Sequence[str] | None = None,
                    classes: dict[str, int] | None = None, layer: str = "net.bn2") -> ipywidgets.VBox:
    """Pick an image, a class and a method; see what in the image raises that class's score.

    Parameters
    ----------
    model : nn.Module
        The course's ImageNet network (or any classifier; give ``classes`` and a ``layer``).
    images : Tensor (B, C, H, W) in [0, 1]
    names : list of str, optional
        One name per image.
    classes : dict of str to int, optional
        Classes to offer; default: the network's top 3 for each image.
    layer : str, default="net.bn2"
        Grad-CAM's layer.

    Returns
    -------
    ipywidgets.VBox
        The live widget; the static figure for the first image is displayed first.

    Examples
    --------
    Displays a figure, so it is not run with the docstrings:

    >>> saliency_widget(models.pretrained(), assets.load_image("chelsea", 96)[None])  # doctest: +SKIP
    """
    images = core.check_images(images, "images", model=core.check_model(model))
    core.get_module(model, layer)
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    with core.inspection_mode(model), torch.no_grad():
        logits = model(images)
    labels = models.imagenet_labels() if logits.shape[1] == 1000 else [str(c) for c in range(logits.shape[1])]
    if classes is None:
        classes = {labels[c]: c for c in logits.topk(3, dim=1).indices.flatten().tolist()}

    def draw(image: int, target: int, method: str) -> Figure:
        x = images[image:image + 1]
        fig = show_maps(x, [_explain(model, x, target, method, layer)], [names[image], method],
                        size=3.2, overlay=(1,) if "CAM" in method and "guided" not in method else ())
        fig.suptitle(f"predicted: {labels[int(logits[image].argmax())]} — explained: {labels[target]}", fontsize=10)
        fig.tight_layout()
        return fig

    return widgets.try_it(
        draw,
        image=ipywidgets.Dropdown(options=[(n, i) for i, n in enumerate(names)], value=0, description="image"),
        target=ipywidgets.Dropdown(options=list(classes.items()), value=next(iter(classes.values())),
                                   description="class"),
        method=ipywidgets.Dropdown(options=list(_METHODS), value="Grad-CAM", description="method"),
    )


def class_model_widget(model: nn.Module, classes: dict[str, int], size: int = 96, steps: int = 60) -> ipywidgets.VBox:
    """Class models with your own regularisers: L2 weight, blur, clipping, jitter and the Fourier parameterisation.

    Press Run to optimise (a few seconds); the title gives the class the
    network sees in a fresh random crop of the result.

    Parameters
    ----------
    model : nn.Module
    classes : dict of str to int
        Classes to offer, e.g. ``{"flamingo": 130}``.
    size : int, default=96
    steps : int, default=60

    Returns
    -------
    ipywidgets.VBox
        The live widget; the static figure (one optimisation) is displayed first.

    Examples
    --------
    Runs an optimisation and displays a figure, so it is not run with the docstrings:

    >>> class_model_widget(models.pretrained(), {"flamingo": 130, "pizza": 963})  # doctest: +SKIP
    """
    core.check_model(model)
    if not classes:
        raise ValueError("classes must name at least one class, e.g. {'flamingo': 130}.")
    labels = models.imagenet_labels() if len(classes) and max(classes.values()) < 1000 else None

    def draw(target: int, l2: float, blur_sigma: float, clip: float, jitter: int, fourier: bool) -> Figure:
        image = class_visualization(model, [target], size=size, steps=steps, lr=0.05, l2=l2,
                                    blur_every=4 if blur_sigma > 0 else 0, blur_sigma=max(blur_sigma, 1e-3),
                                    clip_norm=clip, clip_contribution=clip, jitter=jitter, fourier=fourier,
                                    progress=False)
        recognised = crop_recognition(model, image, [target], crops=4)[0].item()
        name = labels[target] if labels else str(target)
        return plotting.show_images(image, [f"{name}: {recognised:.0%} of random crops recognised"], size=3.6)

    return widgets.try_it(
        draw,
        run_button=True,
        target=ipywidgets.Dropdown(options=list(classes.items()), value=next(iter(classes.values())),
                                   description="class"),
        l2=ipywidgets.FloatLogSlider(value=1e-3, base=10, min=-4, max=0, step=0.5, description="λ (L2)"),
        blur_sigma=ipywidgets.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.1, description="blur σ"),
        clip=ipywidgets.FloatSlider(value=0.0, min=0.0, max=50.0, step=5.0, description="clip %"),
        jitter=ipywidgets.IntSlider(value=4, min=0, max=16, description="jitter"),
        fourier=ipywidgets.Checkbox(value=True, description="Fourier"),
    )
