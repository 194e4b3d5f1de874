"""Neural style: Gram matrices, texture synthesis, style transfer and texture-vs-shape bias.

A convolutional layer's output is a C×H×W grid of C-vectors, one per
position. Reshaped to a matrix F of shape (C, M) with M = H·W positions, its
Gram matrix G = F Fᵀ / M averages the outer products of those vectors: it keeps
which features fire *together* and throws away *where*. Matching Gram matrices
at several layers synthesises a texture [1]_; adding a feature-matching
(content) term transfers a style [2]_.

The course's network is EfficientNet-Lite0 (:func:`utils.models.pretrained`).
Read naively it gives pixel noise; :func:`style_net` holds the recipe that
works: features *before* the ReLU6 clamp of the stem and of the first block of
stages 1–5, Gram matrices of the RGB pixels, the input upsampled 2×
(the stem has stride 2), content at ``net.blocks.3``. VGG-19 is read with Gatys et al.'s
layer names (``relu1_1`` … ``relu5_1``, content ``relu4_2``) by the same code.
Pixels stay in [0, 1] because the optimiser, projected L-BFGS [4]_, keeps them there.

Shape letters: B batch, C channels, H, W height and width, M = H·W positions.
Images are float tensors in [0, 1].

References
----------
.. [1] L. A. Gatys, A. S. Ecker, M. Bethge, "Texture synthesis using
   convolutional neural networks", NeurIPS 2015.
.. [2] L. A. Gatys, A. S. Ecker, M. Bethge, "Image style transfer using
   convolutional neural networks", CVPR 2016.
.. [3] L. A. Gatys, A. S. Ecker, M. Bethge, A. Hertzmann, E. Shechtman,
   "Controlling perceptual factors in neural style transfer", CVPR 2017.
.. [4] D. Kim, S. Sra, I. S. Dhillon, "Tackling box-constrained optimization
   via a new projected quasi-Newton approach", SIAM J. Sci. Comput. 32(6), 2010.
.. [5] R. Geirhos et al., "ImageNet-trained CNNs are biased towards texture;
   increasing shape bias improves accuracy and robustness", ICLR 2019.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ipywidgets
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from . import assets, config, core, models, plotting, widgets

__all__ = [
    "VGG_LAYERS",
    "COARSE_CATEGORIES",
    "gram_matrix",
    "style_layer_loss",
    "content_loss",
    "style_loss",
    "StyleNet",
    "style_net",
    "smooth_noise",
    "minimize_in_box",
    "StyleRun",
    "synthesize_texture",
    "reconstruct_content",
    "style_transfer",
    "preserve_colors",
    "shuffle_positions",
    "color_histogram_distance",
    "radial_power_spectrum",
    "spectrum_distance",
    "gram_distance",
    "coarse_decision",
    "texture_patch",
    "SHAPE_PHOTOS",
    "cue_conflicts",
    "shape_bias",
    "style_widget",
]


def _gatys_layer_names() -> list[str]:
    """conv1_1, relu1_1, conv1_2, ..., pool5: VGG-19's ``features`` in order (blocks of 2, 2, 4, 4, 4 convs)."""
    names = []
    for block, n_convs in enumerate((2, 2, 4, 4, 4), start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


#: Gatys et al.'s VGG-19 layer names mapped to module names of ``models.pretrained("vgg19")``.
VGG_LAYERS: dict[str, str] = {name: f"net.features.{i}" for i, name in enumerate(_gatys_layer_names())}

#: Coarse categories of the texture-vs-shape experiment: each holds the ImageNet
#: classes (by name) whose mean probability is that category's score, as Geirhos
#: et al. map ImageNet's 1,000 classes to 16 categories.
COARSE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "cat": ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"),
    "cup": ("coffee mug", "cup", "espresso"),
    "rocket": ("missile", "projectile", "space shuttle"),
    "building": ("bell cote", "boathouse", "castle", "church", "monastery", "mosque", "palace", "dome"),
    "uniform": ("military uniform", "suit", "Windsor tie"),
    "flower": ("daisy", "bee"),
}


# --------------------------------------------------------------------------- Gram statistics and losses


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    r"""Gram matrix of a layer's feature maps, averaged over positions.

    .. math:: G_{ij} = \frac{1}{M} \sum_{k=1}^{M} F_{ik} F_{jk}, \qquad G = \tfrac1M F F^\top,

    where F is the (C, M) matrix of the layer's C feature maps, each flattened
    over its M = H·W positions. The sum over positions forgets *where* a
    feature fired (permuting the positions leaves G unchanged); dividing by M
    makes images of any size and aspect ratio comparable.

    Parameters
    ----------
    features : Tensor (B, C, H, W) or (C, H, W)

    Returns
    -------
    Tensor (B, C, C) or (C, C)
        Symmetric, positive semi-definite.

    References
    ----------
    Gatys, Ecker, Bethge, "Texture synthesis using convolutional neural networks", NeurIPS 2015.

    Examples
    --------
    >>> gram_matrix(torch.ones(2, 3, 4)).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    if not isinstance(features, torch.Tensor) or features.ndim not in (3, 4):
        raise ValueError(f"features must be a tensor (B, C, H, W) or (C, H, W), got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}.")
    flat = features.flatten(start_dim=-2)  # (..., C, M)
    return flat @ flat.transpose(-1, -2) / flat.shape[-1]


def style_layer_loss(G: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    r"""Style loss of one layer: squared distance of two Gram matrices, relative to the target's size.

    .. math:: E_l = \frac{\sum_{i,j} (G^l_{ij} - A^l_{ij})^2}{\sum_{i,j} (A^l_{ij})^2}

    Gatys et al. divide by :math:`4N_l^2M_l^2`; dividing by the target's own
    squared norm instead makes every layer's loss start near 1 whatever its
    width and activation scale, so layers of a trained network, of a random one
    and the pixels themselves are weighted alike.

    Parameters
    ----------
    G : Tensor (B, C, C) or (C, C)
        Gram matrices of the generated image(s).
    A : Tensor (C, C)
        Gram matrix of the style.

    Returns
    -------
    Tensor ()
        A scalar (summed over a batch).

    Examples
    --------
    >>> style_layer_loss(torch.eye(2), 2 * torch.eye(2)).item()
    0.25
    """
    if not isinstance(A, torch.Tensor) or not isinstance(G, torch.Tensor) or G.shape[-2:] != A.shape[-2:]:
        raise ValueError(f"G and A must be Gram matrices of the same layer (C, C), got "
                         f"{getattr(G, 'shape', type(G).__name__)} and {getattr(A, 'shape', type(A).__name__)}.")
    return ((G - A) ** 2).sum() / (A**2).sum().clamp_min(1e-12)


def content_loss(F: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    r"""Content (feature reconstruction) loss of one layer, relative to the target's size.

    .. math:: L_{content} = \frac{\sum_{i,k} (F_{ik} - P_{ik})^2}{\sum_{i,k} P_{ik}^2}

    Gatys et al. use :math:`\tfrac12\sum (F-P)^2`; the relative form is 1 for
    an image whose features are all zero, whatever the layer.

    Parameters
    ----------
    F, P : Tensor, same shape, e.g. (B, C, H, W)
        Features of the generated image and of the content image.

    Returns
    -------
    Tensor ()

    Examples
    --------
    >>> content_loss(torch.ones(2, 2), 2 * torch.ones(2, 2)).item()
    0.25
    """
    if not isinstance(F, torch.Tensor) or not isinstance(P, torch.Tensor) or F.shape != P.shape:
        raise ValueError(f"F and P must be tensors of the same shape, got {getattr(F, 'shape', type(F).__name__)} "
                         f"and {getattr(P, 'shape', type(P).__name__)}; compute both at one layer from images "
                         "of one size.")
    return ((F - P) ** 2).sum() / (P**2).sum().clamp_min(1e-12)


def shuffle_positions(features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Permute the H·W positions of a (B, C, H, W) or (C, H, W) feature map, the same way in every channel.

    Each C-vector survives intact but lands elsewhere: the layout is destroyed, the Gram matrix is not.

    Examples
    --------
    >>> f = torch.rand(4, 5, 6)
    >>> torch.allclose(gram_matrix(shuffle_positions(f)), gram_matrix(f))
    True
    """
    gram_matrix(features)  # validates the shape
    perm = torch.randperm(features.shape[-2] * features.shape[-1], generator=torch.Generator().manual_seed(seed))
    return features.flatten(start_dim=-2)[..., perm.to(features.device)].reshape(features.shape)


# --------------------------------------------------------------------------- a network read for style


@dataclass(frozen=True)
class StyleNet:
    """A network and where neural style reads it.

    Attributes
    ----------
    model : nn.Module
        A classifier taking [0, 1] pixels (e.g. :func:`utils.models.pretrained`).
    style_layers : tuple of str
        Module names whose outputs' Gram matrices are matched.
    content_layer : str
        Module name whose output is matched for content.
    upsample : int
        The image is enlarged by this factor before the network sees it.
    pixel_gram : bool
        Also match the Gram matrices of the RGB pixels (``"pixels"``) and of the
        pixels minus their mean (``"pixel covariance"``).
    labels : dict of str to str
        Short names for the figures, ``{module name: label}``.
    """

    model: nn.Module
    style_layers: tuple[str, ...]
    content_layer: str
    upsample: int = 1
    pixel_gram: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The architecture and whether it is trained, e.g. ``"efficientnet_lite0 (ImageNet)"``."""
        return f"{getattr(self.model, 'arch', type(self.model).__name__)} " + (
            "(ImageNet)" if models.is_pretrained(self.model) else "(random weights)")

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Outputs of the modules ``layers`` for images x (B, 3, H, W), by forward hooks (:func:`core.capture`)."""
        if self.upsample != 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        with core.inspection_mode(self.model):
            return core.capture(self.model, x, layers)

    def grams(self, x: torch.Tensor, content: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Gram matrices of x (B, 3, H, W) at every style layer (and of the pixels), and the content features.

        One forward pass, which stops at the deepest layer needed. Returns
        ``({layer: (B, C, C)}, content features or None)``.
        """
        layers = [*self.style_layers, self.content_layer] if content else list(self.style_layers)
        feats = self.features(x, layers)
        grams = {layer: gram_matrix(feats[layer]) for layer in self.style_layers}
        if self.pixel_gram:  # and, centred, the colours' covariance, which pins the contrast (see style_net)
            grams["pixels"] = gram_matrix(x)
            grams["pixel covariance"] = gram_matrix(x - x.mean(dim=(-2, -1), keepdim=True))
        return grams, feats[self.content_layer] if content else None

    def min_style_size(self) -> int:
        """Smallest side of a style image: the receptive field of the deepest style layer, in image pixels."""
        known = _FIELDS.setdefault(self.model, {})  # traced once per model and layer
        layer = self.style_layers[-1]
        if layer not in known:
            known[layer] = core.receptive_field(self.model, layer)["size"]
        return math.ceil(known[layer] / self.upsample)


# Receptive fields by model, held weakly: a cache must not keep a 0.5 GB network alive.
_FIELDS: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1)
def _pretrained() -> nn.Module:
    """The course's network, built once per process for the default StyleNet (nothing here changes it)."""
    return models.pretrained()


def _efficientnet_recipe(model: nn.Module) -> dict:
    # timm's BatchNormAct2d computes bn -> drop (an identity at inference) -> act (ReLU6); the
    # output of `drop` is the feature before the clamp. Expansion layers: each stage's first block.
    stages = len(core.get_module(model, "net.blocks"))
    layers = {"net.bn1.drop": "stem"} | {f"net.blocks.{s}.0.bn1.drop": f"blocks.{s}.0" for s in range(1, stages - 1)}
    return {"style_layers": tuple(layers), "content_layer": "net.blocks.3", "upsample": 2, "pixel_gram": True,
            "labels": layers | {"net.blocks.3": "blocks.3"}}


def _vgg_recipe(model: nn.Module) -> dict:
    style_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    return {"style_layers": tuple(VGG_LAYERS[n] for n in style_layers), "content_layer": VGG_LAYERS["relu4_2"],
            "upsample": 1, "pixel_gram": False, "labels": {module: name for name, module in VGG_LAYERS.items()}}


def _module_name(net_labels: dict[str, str], model: nn.Module, layer: object) -> str:
    """A module name from a module name or a label of the recipe (e.g. Gatys's ``"relu4_2"``)."""
    if not isinstance(layer, str):
        raise TypeError(f"Layer names must be strings such as 'net.blocks.3' or 'relu4_2', got {layer!r}.")
    by_label = {label: module for module, label in net_labels.items()}
    name = by_label.get(layer, layer)
    core.get_module(model, name)  # a sentence for an unknown name
    return name


def style_net(
    model: nn.Module | None = None,
    style_layers: Sequence[str] | None = None,
    content_layer: str | None = None,
) -> StyleNet:
    """The course's recipe for reading ``model`` for neural style.

    * EfficientNet-Lite (the default, :func:`utils.models.pretrained`): Gram
      matrices of the features *before* the ReLU6 clamp of the stem
      (``net.bn1``) and of the expansion layer of each stage's first block
      (``net.blocks.{1..5}.0.bn1``), plus the Gram matrix of the RGB pixels
      and that of the pixels minus their mean (the colours' covariance:
      alone, the first barely tells a brighter image with less contrast from
      the target, and short syntheses come out washed out); the image
      enlarged 2× (the stem has stride 2); content at ``net.blocks.3``. Taken
      after the clamp, or at the native size, the Gram matrices give pixel
      noise.
    * VGG-16/19 (torchvision): Gatys et al.'s ``relu1_1`` … ``relu5_1`` and
      content ``relu4_2``, no pixel Gram, no upsampling.
    * Any other network: pass ``style_layers`` and ``content_layer``.

    Parameters
    ----------
    model : nn.Module, optional
        Default :func:`utils.models.pretrained` (EfficientNet-Lite0).
    style_layers : sequence of str, optional
        Module names (or, for VGG, Gatys's names) overriding the recipe's, shallow to deep.
    content_layer : str, optional
        Overrides the recipe's.

    Returns
    -------
    StyleNet

    Examples
    --------
    >>> net = style_net()
    >>> net.content_layer, net.upsample, len(net.style_layers)
    ('net.blocks.3', 2, 6)
    >>> style_net(style_layers=["relu9_9"])
    Traceback (most recent call last):
    ...
    ValueError: The model has no module named 'relu9_9'; choose one of [...] (see core.layer_names(model)).
    """
    model = core.check_model(_pretrained() if model is None else model)
    arch = str(getattr(model, "arch", ""))
    if arch.startswith("efficientnet"):
        recipe = _efficientnet_recipe(model)
    elif arch.startswith("vgg"):
        recipe = _vgg_recipe(model)
    elif style_layers is None or content_layer is None:
        raise ValueError(f"No style recipe for {arch or type(model).__name__}; pass style_layers and content_layer "
                         "(module names, see core.layer_names(model)).")
    else:
        recipe = {"labels": {}}
    labels = recipe["labels"]
    if style_layers is not None:
        if isinstance(style_layers, str) or not style_layers:
            raise ValueError(f"style_layers must be a non-empty list of layer names, got {style_layers!r}.")
        recipe["style_layers"] = tuple(_module_name(labels, model, name) for name in style_layers)
    if content_layer is not None:
        recipe["content_layer"] = _module_name(labels, model, content_layer)
    for name in (*recipe["style_layers"], recipe["content_layer"]):
        core.get_module(model, name)
    return StyleNet(model, **recipe)


# --------------------------------------------------------------------------- the optimisation


def smooth_noise(height: int, width: int, seed: int = 0, amplitude: float = 0.1, grain: int = 8) -> torch.Tensor:
    r"""A smooth, low-amplitude grey image: the start of texture synthesis.

    .. math:: x = 0.5 + a \cdot \operatorname{upsample}_{g}(z), \qquad z \sim \mathcal N(0, I)
              \text{ on a grid } g \text{ times coarser}

    White noise is full of the high frequencies that a network's first layers
    respond to most; starting smooth lets the optimisation build structure
    instead of first removing speckle.

    Parameters
    ----------
    height, width : int
    seed : int, default=0
    amplitude : float, default=0.1
    grain : int, default=8
        Pixels per noise sample.

    Returns
    -------
    Tensor (1, 3, height, width), values in [0, 1]

    Examples
    --------
    >>> x = smooth_noise(32, 48)
    >>> tuple(x.shape), 0.3 < x.mean().item() < 0.7
    ((1, 3, 32, 48), True)
    """
    height, width = core.check_int(height, "height"), core.check_int(width, "width")
    core.check_number(amplitude, "amplitude", high=0.5)
    grain = core.check_int(grain, "grain")
    coarse = torch.randn(1, 3, -(-height // grain) + 1, -(-width // grain) + 1,
                         generator=torch.Generator().manual_seed(core.check_int(seed, "seed", minimum=0)))
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (0.5 + amplitude * smooth).clamp(0, 1).to(config.device())


def _inverse_hessian_times(vector: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    r"""L-BFGS's inverse-Hessian model times a vector: the two-loop recursion over the stored
    :math:`(s_i, y_i, 1/s_i^\top y_i)`, oldest first, with :math:`H_0 = \frac{s^\top y}{y^\top y} I` from the
    newest pair (Nocedal & Wright, *Numerical Optimization*, 2nd ed., algorithm 7.4)."""
    q, alphas = vector.clone(), []
    for s, y, rho in reversed(pairs):
        alphas.append(rho * (s * q).sum())
        q -= alphas[-1] * y
    _, y, rho = pairs[-1]
    q /= rho * (y * y).sum()
    for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        q += (alpha - rho * (y * q).sum()) * s
    return q


def _descent_direction(x: torch.Tensor, grad: torch.Tensor,
                       pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """The two-metric projection direction: pixels at a bound that the gradient pushes outwards are held
    (direction 0); the others take the L-BFGS direction -H g of the gradient restricted to them, or, with no
    curvature pairs yet or an uphill result, the unit steepest-descent direction (pairs are then dropped)."""
    held = ((x <= 0) & (grad > 0)) | ((x >= 1) & (grad < 0))
    free_grad = grad.masked_fill(held, 0)
    if pairs:
        direction = -_inverse_hessian_times(free_grad, pairs).masked_fill_(held, 0)
        if (direction * free_grad).sum() < 0:
            return direction
        pairs.clear()
    return -free_grad / free_grad.norm().clamp_min(1e-12)


def _projected_search(x: torch.Tensor, loss: float, grad: torch.Tensor, direction: torch.Tensor,
                      evaluate: Callable[[torch.Tensor], tuple[float, torch.Tensor]], tries: int = 10):
    r"""Backtracking along the projection arc :math:`x(t) = \Pi_{[0,1]}(x + t\,d)`, t = 1, 1/4, 1/16, …:
    the first point with the Armijo decrease :math:`f(x(t)) \le f(x) + 10^{-4}\,\nabla f(x)^\top (x(t) - x)`,
    as ``(point, loss, gradient)``; None when ``tries`` steps all fail."""
    step = 1.0
    for _ in range(tries):
        point = (x + step * direction).clamp_(0, 1)
        new_loss, new_grad = evaluate(point)
        if new_loss < loss + 1e-4 * float((grad * (point - x)).sum()):
            return point, new_loss, new_grad
        step /= 4
    return None


def minimize_in_box(
    objective: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    start: torch.Tensor,
    steps: int,
    progress: bool = True,
    desc: str = "L-BFGS",
    memory: int = 10,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    r"""Minimise ``objective(x)["loss"]`` over images with every pixel in [0, 1], by projected L-BFGS.

    .. math:: \min_{x \in [0, 1]^{3 \times H \times W}} \mathcal L(x)

    L-BFGS builds a curvature model from its last ``memory`` steps s and
    gradient changes y. The bounds are kept by two-metric projection
    (Bertsekas 1982; Kim, Sra, Dhillon 2010): a pixel at a bound whose gradient
    pushes it outwards is held, the others take the L-BFGS step, and the step
    is projected into the box *before* the line search accepts it, so each
    (s, y) pair describes the step actually taken. Clamping the image after an
    unconstrained step instead, as many style-transfer codes do, moves the
    point behind the optimiser's back and spoils its curvature model. The loop
    runs in the image's own precision on its own device: no copy per pass. It
    stops early when no step of the line search lowers the loss any more.

    Parameters
    ----------
    objective : callable
        ``objective(x)`` for x (1, 3, H, W) returns a dict of scalar tensors with
        a ``"loss"`` (to minimise) and any other terms to record.
    start : Tensor (1, 3, H, W) in [0, 1]
    steps : int
        Iterations (each one forward + backward pass, a few when the line search backtracks).
    progress : bool, default=True
    desc : str, default="L-BFGS"
    memory : int, default=10
        Curvature pairs kept.

    Returns
    -------
    image : Tensor (1, 3, H, W) in [0, 1]
    history : dict of list of float
        For k = 0 (the start) … the iterations done: each term of the
        objective, ``"time"`` (wall seconds) and ``"evaluations"`` (forward +
        backward passes so far).

    References
    ----------
    D. P. Bertsekas, "Projected Newton methods for optimization problems with simple constraints",
    SIAM J. Control Optim. 20(2), 1982. D. Kim, S. Sra, I. S. Dhillon, "Tackling box-constrained
    optimization via a new projected quasi-Newton approach", SIAM J. Sci. Comput. 32(6), 2010.

    Examples
    --------
    >>> target = torch.rand(1, 3, 4, 4)
    >>> x, history = minimize_in_box(lambda x: {"loss": ((x - target) ** 2).sum()},
    ...                              torch.zeros(1, 3, 4, 4), steps=20, progress=False)
    >>> torch.allclose(x, target, atol=1e-4), history["loss"][-1] < 1e-6
    (True, True)
    """
    x = core.check_images(start, "start", single=True).to(config.device()).detach().clone()
    steps, memory = core.check_int(steps, "steps"), core.check_int(memory, "memory")
    history, last, tic = {"time": []}, {"evaluations": 0}, time.perf_counter()

    def evaluate(point: torch.Tensor) -> tuple[float, torch.Tensor]:
        point = point.detach().requires_grad_(True)
        terms = objective(point)
        (grad,) = torch.autograd.grad(terms["loss"], point)
        last.update({key: float(value.detach()) for key, value in terms.items()})
        last["evaluations"] += 1
        return last["loss"], grad

    def record() -> None:  # the last evaluation is always at the accepted point
        for key, value in last.items():
            history.setdefault(key, []).append(value)
        history["time"].append(time.perf_counter() - tic)

    loss, grad = evaluate(x)
    record()
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    with core.progress_bar(total=steps, desc=desc, progress=progress) as bar:
        for _ in range(steps):
            found = _projected_search(x, loss, grad, _descent_direction(x, grad, pairs), evaluate)
            if found is None and pairs:  # the curvature model misled: once more along the gradient
                pairs.clear()
                found = _projected_search(x, loss, grad, _descent_direction(x, grad, pairs), evaluate)
            if found is None:
                break  # no decrease left at this precision
            point, loss, new_grad = found
            s, y = point - x, new_grad - grad
            curvature = float((s * y).sum())
            if curvature > 1e-10 * float((y * y).sum()):
                pairs.append((s, y, 1 / curvature))
                del pairs[:-memory]
            x, grad = point, new_grad
            record()
            bar.update()
    return x, history


# --------------------------------------------------------------------------- texture synthesis and style transfer


@dataclass
class StyleRun:
    """The result of :func:`synthesize_texture` or :func:`style_transfer`.

    Attributes
    ----------
    image : Tensor (1, 3, H, W) in [0, 1]
        The final image.
    history : dict of list of float
        Per iteration of every stage (coarse to fine): the objective's terms
        (``"loss"``, and ``"content"``, ``"style"``, ``"tv"`` for style
        transfer, each already weighted), ``"size"`` (the stage's shorter
        side), ``"time"`` (wall seconds since the start, set-up included) and
        ``"evaluations"`` (forward + backward passes so far).
    stages : list of Tensor (1, 3, h, w)
        The result of each stage, coarse to fine (the last is ``image``).
    """

    image: torch.Tensor
    history: dict[str, list[float]]
    stages: list[torch.Tensor]


def style_loss(grams: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
               weights: dict[str, float] | None = None) -> torch.Tensor:
    r"""Style loss: a weighted sum of the style layers' losses, by default their mean.

    .. math:: \mathcal L_{style}(\hat x) = \sum_{l \in L} w_l\, E_l(\hat G^l, A^l), \qquad w_l = \frac{1}{|L|}

    with :math:`E_l` of :func:`style_layer_loss`.

    Parameters
    ----------
    grams : dict of str to Tensor (B, C, C)
        The generated image's Gram matrices, e.g. from :meth:`StyleNet.grams`.
    targets : dict of str to Tensor (C, C)
        The style's, for the same layers.
    weights : dict of str to float, optional
        :math:`w_l` per target layer; default :math:`1/|L|`.

    Returns
    -------
    Tensor ()

    Examples
    --------
    >>> grams = {"a": torch.eye(2)[None], "b": torch.eye(3)[None]}
    >>> style_loss(grams, {"a": 2 * torch.eye(2), "b": torch.eye(3)}).item()
    0.125
    """
    if not targets or set(targets) - set(grams):
        raise ValueError(f"grams must hold every target layer {sorted(targets)}, got {sorted(grams)}.")
    weights = weights or {layer: 1 / len(targets) for layer in targets}
    return sum(weights[layer] * style_layer_loss(grams[layer], A) for layer, A in targets.items())


def _layer_weights(net: StyleNet, layer_weights: Sequence[float] | None) -> dict[str, float] | None:
    """{layer: w_l} for the style layers, then the pixels' two if the recipe has them; None = the mean."""
    if layer_weights is None:
        return None
    layers = [*net.style_layers, *(["pixels", "pixel covariance"] if net.pixel_gram else [])]
    if isinstance(layer_weights, (str, bytes)) or len(layer_weights) != len(layers):
        raise ValueError(f"layer_weights must give one weight per style layer {layers} (the pixels last), got "
                         f"{layer_weights!r}.")
    return {layer: core.check_number(w, "layer weight") for layer, w in zip(layers, layer_weights, strict=True)}


def _check_rgb(image: object, name: str) -> torch.Tensor:
    return core.check_images(image, name, single=True, channels=3).to(config.device())


def _check_style_size(net: StyleNet, image: torch.Tensor, name: str) -> None:
    """Refuse a style image smaller than the receptive field of the deepest style layer."""
    smallest, needed = min(image.shape[-2:]), net.min_style_size()
    if smallest < needed:
        raise ValueError(
            f"The {name} image is {image.shape[-2]}×{image.shape[-1]} px, smaller than the receptive field of the "
            f"deepest style layer {net.labels.get(net.style_layers[-1], net.style_layers[-1])!r} ({needed} px "
            f"of the image): its Gram matrix would mostly describe the padding. Use a larger {name} image "
            f"(e.g. assets.load_image(name, size={needed})) or a larger style_scale.")


def _stages(size: int, steps: int | Sequence[int]) -> list[tuple[int, int]]:
    """Coarse to fine: ``steps = (s_1, ..., s_n)`` runs s_i iterations at size / 2^(n-i)."""
    plan = [steps] if isinstance(steps, (int, np.integer)) else list(steps)
    if not plan:
        raise ValueError("steps must be an int or a non-empty sequence of ints (iterations per stage, coarse to fine).")
    plan = [core.check_int(n, "steps") for n in plan]
    return [(max(8, round(size / 2 ** (len(plan) - 1 - i))), n) for i, n in enumerate(plan)]


def _gram_targets(net: StyleNet, styles: Sequence[torch.Tensor], weights: Sequence[float],
                  scale: float) -> dict[str, torch.Tensor]:
    """A^l = Σ_k w_k G^l(style_k), each style resized by ``scale``: computed once per stage."""
    targets: dict[str, torch.Tensor] = {}
    for image, weight in zip(styles, weights, strict=True):
        if scale != 1:
            image = assets.resize(image, max(8, round(min(image.shape[-2:]) * scale)))
        with torch.no_grad():
            grams, _ = net.grams(image)
        for layer, gram in grams.items():
            targets[layer] = targets.get(layer, 0) + weight * gram[0]
    return targets


def _extend(history: dict[str, list[float]], stage: dict[str, list[float]], size: int, offset: float) -> None:
    """Append one stage's history: times and evaluations continue from the previous stage's."""
    done = history["evaluations"][-1] if history.get("evaluations") else 0
    for key, values in stage.items():
        shift = offset if key == "time" else done if key == "evaluations" else 0
        history.setdefault(key, []).extend(v + shift for v in values)
    history.setdefault("size", []).extend([size] * len(stage["time"]))


def _coarse_to_fine(size: int, steps: int | Sequence[int], desc: str, progress: bool,
                    setup: Callable[[int, torch.Tensor | None], tuple[Callable, torch.Tensor]]) -> StyleRun:
    """Run ``minimize_in_box`` stage by stage; ``setup(stage_size, previous image)`` gives (objective, start)."""
    image, history, stages, tic = None, {}, [], time.perf_counter()
    for stage_size, stage_steps in _stages(size, steps):
        objective, start = setup(stage_size, image)
        offset = time.perf_counter() - tic  # the stage's set-up (targets) counts
        image, stage = minimize_in_box(objective, start, stage_steps, progress, f"{desc} {stage_size} px")
        _extend(history, stage, stage_size, offset)
        stages.append(image)
    _release_memory()
    return StyleRun(image, history, stages)


def _release_memory() -> None:
    """Give the C heap's free pages back to the system (glibc only; elsewhere nothing happens).

    The autograd graph of one pass at 256 px holds about 0.5 GB. Once freed,
    glibc keeps those pages for later use unless asked, so that the memory a
    notebook holds grows run after run towards Binder's 2 GB limit.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _default_net(net: StyleNet | None) -> StyleNet:
    if net is None:
        return style_net()
    if not isinstance(net, StyleNet):
        raise TypeError(f"net must be a StyleNet (from style.style_net(model)), got {type(net).__name__}.")
    return net


def synthesize_texture(
    texture: torch.Tensor,
    net: StyleNet | None = None,
    size: int = 128,
    steps: int | Sequence[int] = (60, 20),
    seed: int = 0,
    progress: bool = True,
) -> StyleRun:
    r"""Texture synthesis: from smooth noise, match the texture's Gram matrices.

    .. math:: \hat x^\star = \arg\min_{\hat x \in [0,1]^{3\times H\times W}}
              \frac{1}{|L|}\sum_{l \in L} \frac{\lVert \hat G^l - A^l \rVert^2}{\lVert A^l \rVert^2}

    where :math:`A^l` are the texture's Gram matrices (computed once per
    stage) and :math:`\hat G^l` those of the image. Coarse to fine: with
    ``steps = (s_1, …, s_n)`` the image is first optimised at ``size / 2^(n-1)``
    pixels (the texture shrunk alike), then enlarged and refined, up to ``size``.

    Parameters
    ----------
    texture : Tensor (3, H, W) or (1, 3, H, W) in [0, 1]
        RGB, at least :meth:`StyleNet.min_style_size` pixels on its shorter side.
    net : StyleNet, optional
        Default :func:`style_net` (EfficientNet-Lite0).
    size : int, default=128
        Side of the square output.
    steps : int or sequence of int, default=(60, 20)
        L-BFGS iterations per stage, coarse to fine.
    seed : int, default=0
        Seed of the starting noise.
    progress : bool, default=True

    Returns
    -------
    StyleRun
        ``image`` (1, 3, size, size), ``history`` (``"loss"`` per iteration), ``stages``.

    References
    ----------
    Gatys, Ecker, Bethge, "Texture synthesis using convolutional neural networks", NeurIPS 2015.

    Examples
    --------
    >>> run = synthesize_texture(assets.load_image("gravel", size=176), size=32, steps=2, progress=False)
    >>> tuple(run.image.shape), run.history["loss"][-1] < run.history["loss"][0]
    ((1, 3, 32, 32), True)
    """
    net = _default_net(net)
    texture = _check_rgb(texture, "texture")
    _check_style_size(net, texture, "texture")
    size = core.check_int(size, "size", minimum=8)

    def setup(stage_size: int, previous: torch.Tensor | None) -> tuple[Callable, torch.Tensor]:
        targets = _gram_targets(net, [texture], [1.0], stage_size / size)
        start = (smooth_noise(stage_size, stage_size, seed) if previous is None
                 else assets.resize(previous, (stage_size, stage_size)))
        return (lambda x: {"loss": style_loss(net.grams(x)[0], targets)}), start

    return _coarse_to_fine(size, steps, "texture", progress, setup)


def reconstruct_content(
    image: torch.Tensor,
    net: StyleNet | None = None,
    layer: str | None = None,
    size: int | None = None,
    steps: int | Sequence[int] = (40, 20),
    seed: int = 0,
    progress: bool = True,
) -> StyleRun:
    r"""Feature inversion: from smooth noise, match one layer's features of an image.

    .. math:: \hat x^\star = \arg\min_{\hat x \in [0,1]^{3\times H\times W}}
              \frac{\lVert F^l(\hat x) - F^l(p) \rVert^2}{\lVert F^l(p) \rVert^2}

    What the image keeps shows what layer l knows of the photo p: shallow
    layers pin down the pixels, deep ones the arrangement of parts.

    Parameters
    ----------
    image : Tensor (3, H, W) or (1, 3, H, W) in [0, 1]
    net : StyleNet, optional
        Default :func:`style_net`; read at its ``upsample``.
    layer : str, optional
        Module name (or recipe label); default ``net.content_layer``.
    size : int, optional
        Shorter side of the output (default: the image's).
    steps : int or sequence of int, default=(40, 20)
        L-BFGS iterations per stage, coarse to fine.
    seed : int, default=0
    progress : bool, default=True

    Returns
    -------
    StyleRun
        ``history["loss"]`` is the content loss.

    References
    ----------
    Mahendran, Vedaldi, "Understanding deep image representations by inverting them", CVPR 2015.

    Examples
    --------
    >>> run = reconstruct_content(assets.load_image("tubingen", size=32), layer="net.blocks.1", steps=3,
    ...                           progress=False)
    >>> run.history["loss"][-1] < run.history["loss"][0]
    True
    """
    net = _default_net(net)
    image = _check_rgb(image, "image")
    layer = net.content_layer if layer is None else _module_name(net.labels, net.model, layer)
    size = min(image.shape[-2:]) if size is None else core.check_int(size, "size", minimum=8)

    def setup(stage_size: int, previous: torch.Tensor | None) -> tuple[Callable, torch.Tensor]:
        photo = assets.resize(image, stage_size)
        with torch.no_grad():
            target = net.features(photo, [layer])[layer]
        start = smooth_noise(*photo.shape[-2:], seed=seed) if previous is None else assets.resize(
            previous, tuple(photo.shape[-2:]))
        return (lambda x: {"loss": content_loss(net.features(x, [layer])[layer], target)}), start

    return _coarse_to_fine(size, steps, "reconstruction", progress, setup)


def _styles_and_weights(style: torch.Tensor | Sequence[torch.Tensor],
                        blend_weights: Sequence[float] | None) -> tuple[list[torch.Tensor], list[float]]:
    styles = [style] if isinstance(style, torch.Tensor) else list(style)
    if not styles:
        raise ValueError("style must be an image or a non-empty list of images.")
    styles = [_check_rgb(image, f"style[{i}]" if len(styles) > 1 else "style") for i, image in enumerate(styles)]
    weights = [1.0] * len(styles) if blend_weights is None else list(blend_weights)
    if len(weights) != len(styles):
        raise ValueError(f"Got {len(weights)} blend weights for {len(styles)} style images; give one per image.")
    weights = [core.check_number(w, "blend weight") for w in weights]
    if sum(weights) == 0:
        raise ValueError("The blend weights are all zero; give at least one style a positive weight.")
    return styles, [w / sum(weights) for w in weights]


def _start_image(init: str | torch.Tensor, content: torch.Tensor, seed: int) -> torch.Tensor:
    if isinstance(init, torch.Tensor):
        return assets.resize(_check_rgb(init, "init"), tuple(content.shape[-2:]))
    if init == "content":
        return content.clone()
    if init == "noise":
        return smooth_noise(*content.shape[-2:], seed=seed)
    raise ValueError(f"init must be 'content', 'noise' or an image tensor, got {init!r}.")


def style_transfer(
    content: torch.Tensor,
    style: torch.Tensor | Sequence[torch.Tensor],
    net: StyleNet | None = None,
    size: int | None = None,
    steps: int | Sequence[int] = 30,
    style_weight: float = 10.0,
    content_weight: float = 1.0,
    tv_weight: float = 0.0,
    blend_weights: Sequence[float] | None = None,
    layer_weights: Sequence[float] | None = None,
    style_scale: float = 1.0,
    init: str | torch.Tensor = "content",
    seed: int = 0,
    progress: bool = True,
) -> StyleRun:
    r"""Neural style transfer: the content of one image in the style of others.

    .. math:: \mathcal L(\hat x) = \alpha\, L_{content}(F^{l_c}(\hat x), F^{l_c}(p))
              + \beta\, \mathcal L_{style}(\hat x; A) + \gamma\, \frac{R_{V^2}(\hat x)}{HW},
              \qquad A^l = \sum_k w_k\, G^l(a_k)

    minimised over images in [0, 1] by projected L-BFGS, optionally coarse to fine. The content
    p is matched at ``net.content_layer``; the Gram targets A blend the style
    images :math:`a_k` with weights :math:`w_k` (normalised to sum 1); R is
    :func:`utils.core.total_variation`. These are the controls of
    jcjohnson/neural-style: ``blend_weights``, ``style_scale``, ``init``,
    ``tv_weight`` and coarse-to-fine ``steps``; for its ``original_colors``
    pass the result through :func:`preserve_colors`.

    Parameters
    ----------
    content : Tensor (3, H, W) or (1, 3, H, W) in [0, 1]
    style : Tensor (3, H, W), or a list of them
        RGB; each at least :meth:`StyleNet.min_style_size` pixels on its
        shorter side (after ``style_scale``).
    net : StyleNet, optional
        Default :func:`style_net` (EfficientNet-Lite0).
    size : int, optional
        Shorter side of the output (default: the content's).
    steps : int or sequence of int, default=30
        L-BFGS iterations; a sequence runs coarse to fine: stage i of n at
        ``size / 2^(n-i)``, the style images shrunk by the same factor.
    style_weight, content_weight, tv_weight : float, default=10, 1, 0
        β, α, γ ≥ 0.
    blend_weights : sequence of float, optional
        One weight ≥ 0 per style image (default equal).
    layer_weights : sequence of float, optional
        :math:`w_l` ≥ 0 of :func:`style_loss`, one per style layer (and two
        for the pixels last, if the recipe has them); default the mean.
    style_scale : float, default=1.0
        Resize the style images by this factor first: larger strokes for > 1.
    init : {"content", "noise"} or Tensor, default="content"
        Start from the content, from :func:`smooth_noise`, or from an image.
    seed : int, default=0
        Seed of the noise start.
    progress : bool, default=True

    Returns
    -------
    StyleRun
        ``image`` (1, 3, h, w) with the content's aspect ratio; ``history``
        with ``"loss"``, ``"content"``, ``"style"``, ``"tv"`` (weighted); ``stages``.

    References
    ----------
    Gatys, Ecker, Bethge, "Image style transfer using convolutional neural networks", CVPR 2016;
    J. Johnson, "neural-style", github.com/jcjohnson/neural-style, 2015.

    Examples
    --------
    >>> run = style_transfer(assets.load_image("tubingen", size=32), assets.load_image("starry_night", size=176),
    ...                      steps=2, progress=False)
    >>> tuple(run.image.shape), run.history["content"][0]
    ((1, 3, 32, 43), 0.0)
    """
    net = _default_net(net)
    content = _check_rgb(content, "content")
    styles, weights = _styles_and_weights(style, blend_weights)
    for name, value in (("style_weight", style_weight), ("content_weight", content_weight),
                        ("tv_weight", tv_weight)):
        core.check_number(value, name)
    style_scale = core.check_number(style_scale, "style_scale", low_open=True)
    per_layer = _layer_weights(net, layer_weights)
    styles = [assets.resize(s, max(8, round(min(s.shape[-2:]) * style_scale))) if style_scale != 1 else s
              for s in styles]
    for i, image in enumerate(styles):
        _check_style_size(net, image, "style" if len(styles) == 1 else f"style[{i}]")
    size = min(content.shape[-2:]) if size is None else core.check_int(size, "size", minimum=8)

    def setup(stage_size: int, previous: torch.Tensor | None) -> tuple[Callable, torch.Tensor]:
        photo = assets.resize(content, stage_size)
        targets = _gram_targets(net, styles, weights, stage_size / size)
        with torch.no_grad():
            _, target_features = net.grams(photo, content=True)
        start = (_start_image(init, photo, seed) if previous is None
                 else assets.resize(previous, tuple(photo.shape[-2:])))
        weighted = (content_weight, style_weight, tv_weight)
        return functools.partial(_transfer_terms, net, targets, target_features, weighted, per_layer), start

    return _coarse_to_fine(size, steps, "style transfer", progress, setup)


def _transfer_terms(net: StyleNet, targets: dict[str, torch.Tensor], target_features: torch.Tensor,
                    weights: tuple[float, float, float], layer_weights: dict[str, float] | None,
                    x: torch.Tensor) -> dict[str, torch.Tensor]:
    alpha, beta, gamma = weights
    grams, features = net.grams(x, content=True)
    terms = {"content": alpha * content_loss(features, target_features),
             "style": beta * style_loss(grams, targets, layer_weights),
             "tv": gamma * core.total_variation(x) / x[0, 0].numel() if gamma else x.new_zeros(())}
    terms["loss"] = terms["content"] + terms["style"] + terms["tv"]
    return terms


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def preserve_colors(image: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    r"""Keep the content's colours: the image's luminance with the content's chrominance.

    .. math:: (Y, I, Q)^\top = M\,(R, G, B)^\top, \qquad
              \text{out} = M^{-1} (Y_{image}, I_{content}, Q_{content})^\top

    (the YIQ transform M of NTSC). Style transfer then changes only
    brightness patterns — strokes and shading — and leaves hues alone: the
    "luminance-only transfer" of Gatys et al. 2017, done after the
    optimisation as jcjohnson/neural-style's ``-original_colors 1`` does.

    Parameters
    ----------
    image : Tensor (1, 3, H, W) or (3, H, W) in [0, 1]
        A stylised image.
    content : Tensor (3, h, w) or (1, 3, h, w) in [0, 1]
        Resized to the image's size.

    Returns
    -------
    Tensor, the shape of ``image``, in [0, 1]

    References
    ----------
    Gatys, Ecker, Bethge, Hertzmann, Shechtman, "Controlling perceptual factors in neural style transfer", CVPR 2017.

    Examples
    --------
    >>> grey, red = torch.full((3, 4, 4), 0.5), torch.tensor([0.8, 0.2, 0.2]).view(3, 1, 1).expand(3, 4, 4)
    >>> preserve_colors(grey, red)[:, 0, 0]
    tensor([0.9206, 0.3206, 0.3206])
    """
    batch = _check_rgb(image, "image")
    content = assets.resize(_check_rgb(content, "content"), tuple(batch.shape[-2:]))
    to_yiq = _YIQ.to(batch.device)
    yiq_image = torch.einsum("ij,bjhw->bihw", to_yiq, batch)
    yiq_content = torch.einsum("ij,bjhw->bihw", to_yiq, content)
    mixed = torch.cat([yiq_image[:, :1], yiq_content[:, 1:]], dim=1)
    out = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), mixed).clamp(0, 1)
    return out if image.ndim == 4 else out[0]


# --------------------------------------------------------------------------- statistics the network does not see


def color_histogram_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Earth mover's distance between two images' colour histograms, averaged over R, G and B.

    .. math:: d(a, b) = \frac13 \sum_{c \in \{R, G, B\}} \int_0^1 \bigl\lvert H_{a,c}(t) - H_{b,c}(t) \bigr\rvert \,dt

    where :math:`H_{x,c}(t)` is the fraction of pixels of image x whose
    channel c is at most t (the cumulative histogram). It is the average
    amount by which pixel values must move to turn one histogram into the
    other (Rubner et al.'s earth mover's distance, in one dimension per
    channel): 0 for the same colours in any arrangement, 1 between black and
    white.

    Parameters
    ----------
    a, b : Tensor (3, H, W) or (1, 3, H, W) in [0, 1]
        Sizes may differ.

    Returns
    -------
    float

    References
    ----------
    Y. Rubner, C. Tomasi, L. J. Guibas, "The earth mover's distance as a metric for image retrieval", IJCV 2000.

    Examples
    --------
    >>> color_histogram_distance(torch.zeros(3, 4, 4), torch.ones(3, 2, 2))
    1.0
    >>> round(color_histogram_distance(torch.rand(3, 64, 64), torch.rand(3, 64, 64)), 1)
    0.0
    """
    x, y = _check_rgb(a, "a")[0].flatten(1).double(), _check_rgb(b, "b")[0].flatten(1).double()
    total = 0.0
    for u, v in zip(x, y, strict=True):
        points = torch.cat([u, v]).sort().values
        at = points[:-1]
        below_u = torch.searchsorted(u.sort().values, at, right=True) / len(u)
        below_v = torch.searchsorted(v.sort().values, at, right=True) / len(v)
        total += ((below_u - below_v).abs() * points.diff()).sum().item()
    return total / 3


def radial_power_spectrum(image: torch.Tensor, bins: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Radially averaged power spectrum of an image's luminance, in log10.

    .. math:: P(f) = \operatorname{mean}_{\lVert \xi \rVert \in \text{bin}(f)}
              \bigl\lvert \mathcal F[(y - \bar y)\, w](\xi) \bigr\rvert^2 / (HW)

    over spatial frequencies ξ (cycles per pixel) in ``bins`` rings between
    0 and 0.5, where y is the luminance and w a Hann window (which removes the
    border's jump). Natural images and textures fall off like :math:`f^{-2}`;
    noise is flat. Frequencies are per pixel, so images of different sizes
    compare directly.

    Parameters
    ----------
    image : Tensor (3, H, W) or (1, 3, H, W) in [0, 1]
    bins : int, default=16

    Returns
    -------
    frequencies : Tensor (bins,)
        Ring centres, cycles per pixel.
    log_power : Tensor (bins,)

    Examples
    --------
    >>> f, p = radial_power_spectrum(torch.rand(3, 64, 64))
    >>> tuple(f.shape), bool(p.std() < 0.3)  # white noise: flat
    ((16,), True)
    """
    bins = core.check_int(bins, "bins", minimum=2)
    x = _check_rgb(image, "image")[0].double().cpu()
    y = torch.einsum("c,chw->hw", _YIQ[0].double(), x)
    height, width = y.shape
    window = torch.outer(torch.hann_window(height, periodic=False, dtype=torch.float64),
                         torch.hann_window(width, periodic=False, dtype=torch.float64))
    power = torch.fft.fft2((y - y.mean()) * window).abs() ** 2 / (height * width)
    radius = torch.sqrt(torch.fft.fftfreq(height, dtype=torch.float64)[:, None] ** 2
                        + torch.fft.fftfreq(width, dtype=torch.float64)[None, :] ** 2)
    edges = torch.linspace(0, 0.5, bins + 1, dtype=torch.float64)
    ring = torch.bucketize(radius, edges[1:-1], right=True)  # 0 .. bins-1
    keep = (radius > 0) & (radius <= 0.5)
    total = torch.zeros(bins, dtype=torch.float64).index_add_(0, ring[keep], power[keep])
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, ring[keep], torch.ones_like(power[keep]))
    return (edges[1:] + edges[:-1]) / 2, torch.log10(total / count.clamp_min(1) + 1e-12)


def spectrum_distance(a: torch.Tensor, b: torch.Tensor, bins: int = 16) -> float:
    r"""Mean absolute difference of two images' log power spectra (:func:`radial_power_spectrum`).

    .. math:: d(a, b) = \frac{1}{K} \sum_{k=1}^{K} \lvert \log_{10} P_a(f_k) - \log_{10} P_b(f_k) \rvert

    1 means the power differs tenfold on average, ring by ring.

    Examples
    --------
    >>> x = torch.rand(3, 32, 32)
    >>> spectrum_distance(x, x)
    0.0
    """
    return (radial_power_spectrum(a, bins)[1] - radial_power_spectrum(b, bins)[1]).abs().mean().item()


def gram_distance(net: StyleNet, a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Texture distance as another network sees it: the style loss of a against b's Gram matrices.

    .. math:: d(a, b) = \frac{1}{|L|} \sum_{l \in L}
              \frac{\lVert G^l(a) - G^l(b) \rVert^2}{\lVert G^l(b) \rVert^2}

    on the style layers of ``net``. Measured on a trained network that the
    synthesis did not use (e.g. EfficientNet-Lite2), it judges structure that
    colour histograms and power spectra miss.

    Examples
    --------
    >>> x = torch.rand(3, 64, 64)
    >>> gram_distance(style_net(), x, x)
    0.0
    """
    with torch.no_grad():
        grams, _ = _default_net(net).grams(_check_rgb(a, "a"))
        targets, _ = net.grams(_check_rgb(b, "b"))
    return style_loss(grams, {layer: gram[0] for layer, gram in targets.items()}).item()


# --------------------------------------------------------------------------- texture or shape?


def coarse_decision(model: nn.Module, image: torch.Tensor,
                    categories: dict[str, Sequence[str]] = COARSE_CATEGORIES) -> tuple[str, dict[str, float]]:
    r"""The classifier's decision among coarse categories, as Geirhos et al. read ImageNet networks.

    .. math:: \hat c = \arg\max_{c} \frac{1}{|S_c|} \sum_{k \in S_c} p_k(x)

    where :math:`S_c` holds the ImageNet classes of category c and p the softmax.

    Parameters
    ----------
    model : nn.Module
        An ImageNet classifier taking [0, 1] pixels.
    image : Tensor (3, H, W) or (1, 3, H, W) in [0, 1]
    categories : dict of str to sequence of str, default=COARSE_CATEGORIES
        ImageNet class names per category.

    Returns
    -------
    decision : str
    scores : dict of str to float
        The mean probability of each category.

    References
    ----------
    Geirhos et al., "ImageNet-trained CNNs are biased towards texture", ICLR 2019.

    Examples
    --------
    >>> coarse_decision(models.pretrained(), assets.load_image("chelsea", size=224))[0]
    'cat'
    """
    probabilities = dict(models.classify(model, _check_rgb(image, "image"), k=1000)[0])
    unknown = [label for labels in categories.values() for label in labels if label not in probabilities]
    if unknown:
        raise ValueError(f"Unknown ImageNet class names {unknown}; see models.imagenet_labels().")
    scores = {c: float(np.mean([probabilities[label] for label in labels])) for c, labels in categories.items()}
    return max(scores, key=scores.get), scores


def texture_patch(model: nn.Module, photo: torch.Tensor, category: str, grid: int = 3, size: int = 224) -> torch.Tensor:
    """The close-up of ``photo`` that looks most like ``category`` to the classifier: a texture image.

    The photo is cut into ``grid`` × ``grid`` overlapping crops of 1/``grid``
    of its sides (on a regular grid of positions); the crop with the highest
    :func:`coarse_decision` score for ``category`` is enlarged to ``size``
    pixels on its shorter side. Geirhos et al. likewise kept only texture
    images that the networks classified correctly.

    Returns
    -------
    Tensor (3, size, w) in [0, 1]

    Examples
    --------
    >>> texture_patch(models.pretrained(), assets.load_image("chelsea"), "cat").shape
    torch.Size([3, 224, 336])
    """
    photo = _check_rgb(photo, "photo")[0]
    if category not in COARSE_CATEGORIES:
        raise ValueError(f"Unknown category {category!r}; expected one of {list(COARSE_CATEGORIES)}.")
    grid = core.check_int(grid, "grid", minimum=2)
    height, width = photo.shape[-2:]
    h, w = height // grid, width // grid
    crops = [photo[:, (height - h) * i // (grid - 1):][:, :h, (width - w) * j // (grid - 1):][:, :, :w]
             for i in range(grid) for j in range(grid)]
    best = max(crops, key=lambda c: coarse_decision(model, assets.resize(c, size))[1][category])
    return assets.resize(best, size)


#: The photo that gives each category's shape (and, cropped, its texture) in the cue-conflict experiment.
SHAPE_PHOTOS: dict[str, str] = {"cat": "chelsea", "cup": "coffee", "rocket": "rocket", "building": "china",
                                "uniform": "grace_hopper", "flower": "flower"}


def cue_conflicts(model: nn.Module, net: StyleNet, categories: Sequence[str], size: int = 112,
                  steps: int | Sequence[int] = (30, 15), style_weight: float = 10.0,
                  progress: bool = True) -> list[dict]:
    """Cue-conflict images by style transfer, each classified: every ordered pair of ``categories``.

    The shape comes from the category's photo (:data:`SHAPE_PHOTOS`), the
    texture from another category's :func:`texture_patch`; the stylised image
    is enlarged to 2 × ``size`` and classified by :func:`coarse_decision`.

    Returns
    -------
    list of dict
        One per image: ``"shape"``, ``"texture"``, ``"decision"`` (categories),
        ``"image"`` (3, h, w) and ``"texture_image"``.
    """
    unknown = [c for c in categories if c not in SHAPE_PHOTOS]
    if unknown or len(set(categories)) < 2:
        raise ValueError(f"categories must be two or more distinct names from {list(SHAPE_PHOTOS)}, got "
                         f"{list(categories)!r}.")
    photos = {c: assets.load_image(SHAPE_PHOTOS[c]) for c in categories}
    textures = {c: texture_patch(model, photos[c], c) for c in categories}
    records = []
    for shape in categories:
        for texture in (c for c in categories if c != shape):
            run = style_transfer(photos[shape], textures[texture], net, size=size, steps=steps,
                                 style_weight=style_weight, progress=progress)
            decision, _ = coarse_decision(model, assets.resize(run.image, 2 * size))
            records.append({"shape": shape, "texture": texture, "decision": decision, "image": run.image[0],
                            "texture_image": textures[texture]})
    return records


def shape_bias(decisions: Sequence[tuple[str, str, str]]) -> dict[str, float]:
    r"""Shape bias of cue-conflict decisions: the fraction that follow the shape.

    .. math:: \text{shape bias} = \frac{n_{shape}}{n_{shape} + n_{texture}}

    Decisions for neither category do not count (Geirhos et al.).

    Parameters
    ----------
    decisions : sequence of (shape category, texture category, decision)

    Returns
    -------
    dict
        ``{"images", "shape", "texture", "other", "shape_bias"}`` (NaN when
        no decision followed either cue).

    Examples
    --------
    >>> shape_bias([("cat", "cup", "cup"), ("cup", "cat", "cup"), ("cat", "rocket", "building")])
    {'images': 3, 'shape': 1, 'texture': 1, 'other': 1, 'shape_bias': 0.5}
    """
    counts = {"images": 0, "shape": 0, "texture": 0, "other": 0}
    for shape, texture, decision in decisions:
        if shape == texture:
            raise ValueError(f"A cue-conflict image needs two categories, got {shape!r} twice.")
        counts["images"] += 1
        counts["shape" if decision == shape else "texture" if decision == texture else "other"] += 1
    cued = counts["shape"] + counts["texture"]
    return {**counts, "shape_bias": counts["shape"] / cued if cued else math.nan}


# ------------------------------------------------------------------------- Try it


def style_widget(content: str = "tubingen", style: str = "starry_night", style_weight: float = 10.0,
                 colors: str = "style's", size: int | None = None,
                 steps: int | Sequence[int] | None = None) -> ipywidgets.VBox:
    """Try it: style transfer with a chosen photo, painting, style weight and colours.

    Each press of *Run* optimises from the content image at
    ``size`` pixels with ``steps`` iterations (defaults from :func:`utils.config.pick`),
    on the course's network.
    """
    size = size or config.pick(full=128, fast=48)
    steps = steps or config.pick(full=30, fast=3)
    net = style_net()

    def draw(content: str, style: str, style_weight: float, colors: str) -> Figure:
        photo = assets.load_image(content, size=size)
        painting = assets.load_image(style, size=max(256, net.min_style_size()))
        run = style_transfer(photo, painting, net, steps=steps, style_weight=style_weight)
        image = preserve_colors(run.image, photo) if colors == "photo's" else run.image
        titles = [f"content: {content}", f"style: {style}", f"style weight {style_weight:g}, {colors} colours"]
        return plotting.show_images([photo, painting, image[0]], titles, size=3.2)

    return widgets.try_it(
        draw,
        run_button=True,
        content=ipywidgets.Dropdown(options=list(assets.PHOTOS), value=content, description="content"),
        style=ipywidgets.Dropdown(options=list(assets.PAINTINGS), value=style, description="style"),
        style_weight=ipywidgets.FloatLogSlider(value=style_weight, base=10, min=-1, max=3, step=0.5,
                                               description="style weight"),
        colors=ipywidgets.Dropdown(options=["style's", "photo's"], value=colors, description="colours"),
    )
