"""Neural style: Gram matrices, texture synthesis and style transfer (Gatys et al.).

A convolutional layer's output is a C×H×W grid of C-vectors, one per
position. Reshaped to a matrix F of shape (C, M) with M = H·W positions, its
Gram matrix G = F Fᵀ keeps which features fire *together* and throws away
*where*. Matching Gram matrices at several VGG-19 layers synthesises a
texture; adding a feature-matching (content) term transfers a style.

Shape letters: B batch, C (= N_l) channels, H, W height and width, M = H·W
(= M_l) positions. Images are float tensors in [0, 1].

Speed comes from doing less work: :class:`VGGFeatures` keeps VGG-19 only up
to the deepest layer a loss uses, style and content targets are computed once
before the optimisation, and everything runs on :func:`utils.config.device`.

References
----------
.. [1] L. A. Gatys, A. S. Ecker, M. Bethge, "Texture synthesis using
   convolutional neural networks", NeurIPS 2015.
.. [2] L. A. Gatys, A. S. Ecker, M. Bethge, "Image style transfer using
   convolutional neural networks", CVPR 2016.
.. [3] A. Mahendran, A. Vedaldi, "Understanding deep image representations by
   inverting them", CVPR 2015.
"""

from __future__ import annotations

import copy
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import ipywidgets
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from . import assets, config, models, plotting, widgets

__all__ = [
    "VGG_LAYERS",
    "STYLE_LAYERS",
    "gram_matrix",
    "style_layer_loss",
    "content_loss",
    "total_variation",
    "VGGFeatures",
    "synthesize_texture",
    "style_transfer",
    "shuffle_positions",
    "calibrated_style_weight",
]


def _gatys_layer_names() -> list[str]:
    """conv1_1, relu1_1, conv1_2, ..., pool5: VGG-19's `features` in order.

    VGG-19 has five blocks of 2, 2, 4, 4, 4 convolutions, each conv followed
    by a ReLU and each block closed by a 2×2 pooling, so the position of a
    name in this list is its index in ``torchvision.models.vgg19().features``.
    """
    names = []
    for block, n_convs in enumerate((2, 2, 4, 4, 4), start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


#: Gatys et al.'s layer names mapped to indices of torchvision's ``vgg19().features``.
VGG_LAYERS: dict[str, int] = {name: index for index, name in enumerate(_gatys_layer_names())}

#: The style layers of Gatys et al. 2016 (one per block), here after the ReLU.
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _check_tensor(x: object, name: str, ndims: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape "
                         f"{tuple(x.shape)}; e.g. features of shape (B, C, H, W) or (C, H, W).")


def gram_matrix(features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    r"""Gram matrix of a layer's feature maps: which channels fire together.

    .. math:: G_{ij} = \sum_{k=1}^{M} F_{ik} F_{jk}, \qquad G = F F^\top,

    where F is the (C, M) matrix of the layer's C feature maps, each flattened
    over its M = H·W positions. The sum over positions k forgets *where* a
    feature fired: permuting the positions leaves G unchanged.

    Parameters
    ----------
    features : torch.Tensor, shape (B, C, H, W) or (C, H, W)
        Activations of one layer.
    normalize : bool, default=False
        Divide by C·H·W (numerical convenience; the losses below use the
        unnormalised G of the lecture and put the size factors in E_l).

    Returns
    -------
    torch.Tensor, shape (B, C, C) or (C, C)
        Symmetric, positive semi-definite.

    References
    ----------
    Gatys, Ecker, Bethge, "Texture synthesis using convolutional neural networks", 2015.

    Examples
    --------
    >>> gram_matrix(torch.ones(2, 3, 4)).tolist()
    [[12.0, 12.0], [12.0, 12.0]]
    """
    _check_tensor(features, "features", (3, 4))
    flat = features.flatten(start_dim=-2)  # (..., C, M)
    gram = flat @ flat.transpose(-1, -2)  # (..., C, C)
    if normalize:
        channels, height, width = features.shape[-3:]
        gram = gram / (channels * height * width)
    return gram


def style_layer_loss(G: torch.Tensor, A: torch.Tensor, n_channels: int, n_positions: int) -> torch.Tensor:
    r"""Style loss of one layer: squared distance of two Gram matrices.

    .. math:: E_l = \frac{1}{4 N_l^2 M_l^2} \sum_{i,j} \bigl(G^l_{ij} - A^l_{ij}\bigr)^2

    The factor 1/(4N²M²) makes layers of different sizes comparable (G grows
    like M and has N² entries).

    Parameters
    ----------
    G, A : torch.Tensor, shape (C, C) or (B, C, C)
        Gram matrices (unnormalised) of the generated and of the style image.
    n_channels : int
        N_l, the layer's number of feature maps C.
    n_positions : int
        M_l = H·W, the number of positions of each feature map.

    Returns
    -------
    torch.Tensor
        A scalar (summed over a batch).

    References
    ----------
    Gatys, Ecker, Bethge, "Texture synthesis using convolutional neural networks", 2015, eq. (4).

    Examples
    --------
    >>> style_layer_loss(torch.eye(2), torch.zeros(2, 2), n_channels=2, n_positions=1).item()
    0.125
    """
    _check_tensor(G, "G", (2, 3))
    if not isinstance(A, torch.Tensor) or A.shape != G.shape:
        raise ValueError(f"A must be a tensor of G's shape {tuple(G.shape)}, got "
                         f"{tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__}.")
    for name, value in (("n_channels", n_channels), ("n_positions", n_positions)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}; pass C and H*W of the layer.")
    return ((G - A) ** 2).sum() / (4 * n_channels**2 * n_positions**2)


def content_loss(F: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    r"""Content (feature reconstruction) loss of one layer.

    .. math:: L_{content} = \tfrac12 \sum_{i,j} \bigl(F^l_{ij} - P^l_{ij}\bigr)^2

    Parameters
    ----------
    F, P : torch.Tensor, same shape, e.g. (B, C, H, W)
        Features of the generated image and of the content image.

    Returns
    -------
    torch.Tensor
        A scalar.

    References
    ----------
    Gatys, Ecker, Bethge, "Image style transfer using convolutional neural networks", 2016, eq. (1).

    Examples
    --------
    >>> content_loss(torch.ones(2, 2), torch.zeros(2, 2)).item()
    2.0
    """
    if not isinstance(F, torch.Tensor) or not isinstance(P, torch.Tensor):
        raise TypeError(f"F and P must be tensors, got {type(F).__name__} and {type(P).__name__}.")
    if F.shape != P.shape:
        raise ValueError(f"F and P must have the same shape, got {tuple(F.shape)} and {tuple(P.shape)}; "
                         "compute both at the same layer from images of the same size.")
    return 0.5 * ((F - P) ** 2).sum()


def total_variation(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    r"""Total-variation regulariser :math:`R_{V^\beta}` of Mahendran & Vedaldi.

    .. math:: R_{V^\beta}(x) = \sum_{c,i,j} \Bigl( (x_{c,i,j+1} - x_{c,i,j})^2
              + (x_{c,i+1,j} - x_{c,i,j})^2 \Bigr)^{\beta/2}

    summed over channels c and over the positions (i, j) that have both a right
    and a lower neighbour. β = 2 penalises all edges quadratically; β ≤ 1 lets
    sharp edges through while removing speckle.

    Parameters
    ----------
    x : torch.Tensor, shape (B, C, H, W) or (C, H, W)
        Image(s); H, W ≥ 2.
    beta : float, default=2.0
        Exponent β > 0.

    Returns
    -------
    torch.Tensor
        A scalar. Its gradient is finite for every β (flat patches get a zero
        sub-gradient).

    References
    ----------
    Mahendran, Vedaldi, "Understanding deep image representations by inverting them", 2015, eq. (5).

    Examples
    --------
    >>> total_variation(torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])).item()
    1.0
    """
    _check_tensor(x, "x", (3, 4))
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"x must be at least 2×2 pixels, got shape {tuple(x.shape)}.")
    if not isinstance(beta, (int, float)) or beta <= 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}; Mahendran & Vedaldi use 1 or 2.")
    right = x[..., :-1, 1:] - x[..., :-1, :-1]  # x_{i,j+1} - x_{ij}
    down = x[..., 1:, :-1] - x[..., :-1, :-1]  # x_{i+1,j} - x_{ij}
    squared = right**2 + down**2
    # (s)^{β/2} has an infinite derivative at s = 0 for β < 2: evaluate it only where s > 0.
    positive = squared > 0
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe ** (beta / 2), torch.zeros_like(squared)).sum()


@functools.lru_cache(maxsize=1)
def _vgg19_parts() -> tuple[nn.Module, nn.Sequential, bool]:
    """(normalize, features, is_pretrained) of the course's VGG-19, built once per process."""
    model = models.pretrained("vgg19")
    return model.normalize.cpu(), model.net.features.cpu(), models.is_pretrained(model)


class VGGFeatures(nn.Module):
    """VGG-19 cut after the deepest requested layer; returns ``{name: activation}``.

    The network is built from :func:`utils.models.pretrained` ("vgg19"): ImageNet
    weights when available, the seeded random fallback otherwise, with the
    ImageNet normalisation as its first layer (so it takes [0, 1] pixels). Its
    modules are named as in Gatys et al. (``conv1_1``, ``relu1_1``, …,
    ``pool5``); layers below the deepest requested one are dropped, so the
    forward pass does no work beyond it. The module owns a frozen copy of the
    weights (``requires_grad_(False)``) in eval mode; ReLUs are not in-place,
    so a conv layer's output is returned before rectification.

    Parameters
    ----------
    layers : sequence of str
        Names from :data:`VGG_LAYERS`, e.g. ``["relu1_1", "relu4_2"]``.
    pool : {"max", "avg"}, default="max"
        Gatys et al. replace max-pooling by 2×2 average pooling, which they
        found gives slightly smoother gradients and results; "avg" does that.

    Examples
    --------
    >>> net = VGGFeatures(["relu1_1", "relu2_1"])
    >>> {k: tuple(v.shape) for k, v in net(torch.rand(1, 3, 32, 32)).items()}
    {'relu1_1': (1, 64, 32, 32), 'relu2_1': (1, 128, 16, 16)}
    """

    def __init__(self, layers: Sequence[str], pool: str = "max"):
        super().__init__()
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}; "
                             "e.g. ['relu1_1', 'relu2_1'].")
        unknown = [name for name in layers if name not in VGG_LAYERS]
        if unknown:
            raise ValueError(f"Unknown VGG-19 layer(s) {unknown}; expected names like 'conv1_1', "
                             f"'relu4_2', 'pool3' (see style.VGG_LAYERS).")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}.")
        self.layers = list(dict.fromkeys(layers))
        normalize, features, self.is_pretrained = _vgg19_parts()
        deepest = max(VGG_LAYERS[name] for name in self.layers)
        names = _gatys_layer_names()[: deepest + 1]
        modules = [(name, self._copy(features[VGG_LAYERS[name]], pool)) for name in names]
        self.body = nn.Sequential(OrderedDict([("normalize", copy.deepcopy(normalize))] + modules))
        self.requires_grad_(False).eval().to(config.device())

    @staticmethod
    def _copy(module: nn.Module, pool: str) -> nn.Module:
        if isinstance(module, nn.ReLU):
            return nn.ReLU(inplace=False)  # in-place would overwrite the conv output we return
        if isinstance(module, nn.MaxPool2d) and pool == "avg":
            return nn.AvgPool2d(kernel_size=2, stride=2)
        return copy.deepcopy(module)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_tensor(x, "x", (4,))
        wanted, out = set(self.layers), {}
        for name, module in self.body.named_children():
            x = module(x)
            if name in wanted:
                out[name] = x
        return out


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    _check_tensor(image, name, (3, 4))
    image = image if image.ndim == 4 else image[None]
    if image.shape[1] != 3:
        raise ValueError(f"{name} must be an RGB image (3 channels), got shape {tuple(image.shape)}.")
    if image.min() < 0 or image.max() > 1:
        raise ValueError(f"{name} must have values in [0, 1], got [{image.min():.3g}, {image.max():.3g}]; "
                         "load images with assets.load_image.")
    return image.to(config.device())


def _resize(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize a (B, 3, H, W) batch so that its shorter side is ``size``."""
    if size is None:
        return image
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image, size=shape, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _style_targets(net: VGGFeatures, style: torch.Tensor, layers: Sequence[str]) -> dict:
    """Gram matrices of the style image at ``layers``, computed once."""
    with torch.no_grad():
        feats = net(style)
    return {name: gram_matrix(feats[name]) for name in layers}


def _style_loss(feats: dict, targets: dict, weights: dict[str, float]) -> torch.Tensor:
    """L_style = Σ_l w_l E_l over the style layers (0 if there are none)."""
    total = torch.zeros((), device=next(iter(feats.values())).device)
    for name, A in targets.items():
        _, channels, height, width = feats[name].shape
        total = total + weights[name] * style_layer_loss(gram_matrix(feats[name]), A, channels, height * width)
    return total


def _noise(like: torch.Tensor, seed: int) -> torch.Tensor:
    """Grey with faint Gaussian noise, 0.5 + 0.1·N(0, 1): a start in the sigmoid's steep middle.

    (Gatys et al. start from white noise; full-range uniform noise puts many pixels where the
    sigmoid is flat, and the optimisation then takes many more steps to move them.)
    """
    noise = torch.randn(like.shape, generator=torch.Generator().manual_seed(seed))
    return (0.5 + 0.1 * noise).clamp(0, 1).to(like.device)


def _logit(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.logit(x.clamp(eps, 1 - eps))


def _make_optimizer(u: torch.Tensor, optimizer: str, lr: float | None) -> torch.optim.Optimizer:
    if optimizer == "lbfgs":
        # One iteration and one forward + backward pass per step (no line search: torch's
        # strong-Wolfe search makes little progress on these losses). Steps damped to 0.3:
        # the full quasi-Newton step overshoots when the style weight is large. Tolerances 0:
        # stop after `steps` steps, never because the losses look converged.
        return torch.optim.LBFGS([u], lr=lr or 0.3, max_iter=1, history_size=20,
                                 tolerance_grad=0.0, tolerance_change=0.0)
    if optimizer == "adam":
        return torch.optim.Adam([u], lr=lr or 0.02)
    raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}.")


def _optimize(
    start: torch.Tensor,
    objective: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    steps: int,
    optimizer: str,
    lr: float | None,
    desc: str,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Minimise ``objective(image)["loss"]`` over images in [0, 1].

    The image is parametrised as x = sigmoid(u) with u unconstrained, so every
    iterate lies in (0, 1) without clamping. (Clamping after each step, as many
    implementations do, moves the point behind L-BFGS's back and spoils its
    curvature history.) ``history[key][k]`` is a term after k steps (k = 0..steps),
    ``history["time"][k]`` the wall time and ``history["evaluations"][k]`` the
    forward + backward passes by then (one per step for both optimisers).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    u = _logit(start.detach()).requires_grad_(True)
    opt = _make_optimizer(u, optimizer, lr)
    history: dict[str, list[float]] = {"time": [], "evaluations": []}
    evaluations, log_next, scale, tic = [0], [True], [], time.perf_counter()

    def log(terms: dict[str, torch.Tensor], reached: float) -> None:
        for key, value in terms.items():
            history.setdefault(key, []).append(float(value.detach()))
        history["time"].append(reached - tic)  # when this point was reached
        history["evaluations"].append(evaluations[0])

    def closure() -> torch.Tensor:
        reached = time.perf_counter()
        opt.zero_grad()
        terms = objective(torch.sigmoid(u))
        if log_next[0]:  # a step's first evaluation is at its starting point
            log(terms, reached)
            log_next[0] = False
        terms["loss"].backward()
        if not scale:
            # The optimiser sees c·L with c = 1 / max|∇L(x_0)|: the same minimiser, but free of
            # the losses' arbitrary scale, which matters because torch's L-BFGS has absolute
            # thresholds (it drops curvature pairs with y·s < 1e-10).
            scale.append(1.0 / max(u.grad.abs().max().item(), 1e-30))
        u.grad.mul_(scale[0])
        evaluations[0] += 1
        return terms["loss"].detach() * scale[0]

    for _ in tqdm(range(steps), desc=desc, leave=False):
        log_next[0] = True
        opt.step(closure)
    reached = time.perf_counter()
    with torch.no_grad():
        log(objective(torch.sigmoid(u)), reached)
    return torch.sigmoid(u).detach(), history


def _layer_weights(layers: Sequence[str], weights: Sequence[float] | None) -> dict[str, float]:
    if weights is None:
        return {name: 1.0 / len(layers) for name in layers}  # Gatys et al.: w_l = 1/|layers|
    if len(weights) != len(layers):
        raise ValueError(f"Got {len(weights)} layer weights for {len(layers)} layers; give one per layer.")
    return dict(zip(layers, (float(w) for w in weights), strict=True))


def synthesize_texture(
    texture: torch.Tensor,
    layers: Sequence[str] = STYLE_LAYERS,
    steps: int = 100,
    size: int | None = None,
    optimizer: str = "lbfgs",
    layer_weights: Sequence[float] | None = None,
    pool: str = "max",
    seed: int = 0,
    net: VGGFeatures | None = None,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    r"""Texture synthesis: from noise, match the texture's Gram matrices.

    .. math:: \mathcal L(\hat x) = \sum_{l} w_l E_l, \qquad
              E_l = \frac{1}{4 N_l^2 M_l^2} \sum_{i,j} (\hat G^l_{ij} - A^l_{ij})^2

    where A^l are the Gram matrices of the texture (computed once) and Ĝ^l
    those of the synthesised image, which starts as faint noise around grey. Deeper
    layer sets capture larger structures.

    Parameters
    ----------
    texture : torch.Tensor, shape (3, H, W) or (1, 3, H, W), values in [0, 1]
    layers : sequence of str, default=STYLE_LAYERS
        Layers whose Gram matrices are matched.
    steps : int, default=100
        Optimisation steps (iterations of L-BFGS or Adam).
    size : int or None, default=None
        Resize the texture's shorter side to ``size`` first; the output has the
        texture's (resized) shape.
    optimizer : {"lbfgs", "adam"}, default="lbfgs"
    layer_weights : sequence of float, optional
        w_l per layer; default 1/len(layers).
    pool : {"max", "avg"}, default="max"
        Pooling of :class:`VGGFeatures`.
    seed : int, default=0
        Seed of the starting noise.
    net : VGGFeatures, optional
        A feature extractor to reuse (must cover ``layers``).

    Returns
    -------
    image : torch.Tensor, shape (1, 3, H, W), values in (0, 1)
    history : dict of list of float
        After k = 0, ..., steps steps: ``"loss"``, ``"time"`` (wall seconds) and
        ``"evaluations"`` (forward + backward passes so far).

    References
    ----------
    Gatys, Ecker, Bethge, "Texture synthesis using convolutional neural networks", NeurIPS 2015.

    Examples
    --------
    >>> image, history = synthesize_texture(assets.load_image("brick"), steps=5, size=64)  # doctest: +SKIP
    """
    texture = _resize(_as_batch(texture, "texture"), size)
    net = net or VGGFeatures(list(layers), pool=pool)
    targets = _style_targets(net, texture, layers)
    weights = _layer_weights(layers, layer_weights)
    noise = _noise(texture, seed)

    def objective(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": _style_loss(net(image), targets, weights)}

    return _optimize(noise, objective, steps, optimizer, None, "texture")


def style_transfer(
    content: torch.Tensor,
    style: torch.Tensor,
    content_layer: str = "relu4_2",
    style_layers: Sequence[str] = STYLE_LAYERS,
    content_weight: float = 1.0,
    style_weight: float = 1e3,
    tv_weight: float = 0.0,
    steps: int = 100,
    optimizer: str = "lbfgs",
    init: str | torch.Tensor = "content",
    size: int | None = None,
    lr: float | None = None,
    pool: str = "max",
    seed: int = 0,
    net: VGGFeatures | None = None,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    r"""Neural style transfer: the content of one image in the style of another.

    .. math:: \mathcal L(\hat x) = \alpha\, \tfrac12 \sum (F^{l_c} - P^{l_c})^2
              + \beta \sum_l w_l E_l + \gamma\, R_{V^2}(\hat x)

    with F, P the features of the generated and the content image at the
    content layer, E_l the style loss of :func:`style_layer_loss` (w_l = 1/L),
    and R the total variation. Targets are computed once; the network stops at
    the deepest layer used. Iterates stay in [0, 1] through a sigmoid
    parametrisation.

    Parameters
    ----------
    content, style : torch.Tensor, shape (3, H, W) or (1, 3, H, W), values in [0, 1]
    content_layer : str, default="relu4_2"
    style_layers : sequence of str, default=STYLE_LAYERS
    content_weight, style_weight, tv_weight : float
        α, β, γ. Only the ratio α/β matters (up to the optimiser's step size).
    steps : int, default=100
        Optimisation steps (iterations of L-BFGS or Adam).
    optimizer : {"lbfgs", "adam"}, default="lbfgs"
    init : {"content", "noise"} or torch.Tensor, default="content"
        Start from the content image, from faint noise around grey, or from a given image
        (e.g. an upsampled coarser result, for coarse-to-fine).
    size : int or None, default=None
        Shorter side of content and style (both resized); None keeps them.
    lr : float, optional
        Step size (default 0.3 for L-BFGS, 0.02 for Adam; on the sigmoid's logits).
    pool : {"max", "avg"}, default="max"
    seed : int, default=0
        Seed of the noise start.
    net : VGGFeatures, optional
        A feature extractor to reuse (must cover all layers used).

    Returns
    -------
    image : torch.Tensor, shape (1, 3, H, W), values in (0, 1)
    history : dict of list of float
        After k = 0, ..., steps steps: ``"loss"``, ``"content"``, ``"style"``,
        ``"tv"`` (weighted terms), ``"time"`` (wall seconds) and ``"evaluations"``
        (forward + backward passes so far).

    References
    ----------
    Gatys, Ecker, Bethge, "Image style transfer using convolutional neural networks", CVPR 2016.

    Examples
    --------
    >>> image, history = style_transfer(assets.load_image("tubingen"),
    ...                                 assets.load_image("starry_night"), size=64, steps=5)  # doctest: +SKIP
    """
    content = _resize(_as_batch(content, "content"), size)
    style = _resize(_as_batch(style, "style"), size)
    layers = list(dict.fromkeys([content_layer, *style_layers]))
    net = net or VGGFeatures(layers, pool=pool)
    style_targets = _style_targets(net, style, style_layers)
    with torch.no_grad():
        content_target = net(content)[content_layer]
    weights = _layer_weights(style_layers, None)
    start = _initial_image(init, content, seed)

    def objective(image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = net(image)
        terms = {"content": content_weight * content_loss(feats[content_layer], content_target),
                 "style": style_weight * _style_loss(feats, style_targets, weights),
                 "tv": tv_weight * total_variation(image)}
        terms["loss"] = terms["content"] + terms["style"] + terms["tv"]
        return terms

    return _optimize(start, objective, steps, optimizer, lr, "style transfer")


def _initial_image(init: str | torch.Tensor, content: torch.Tensor, seed: int) -> torch.Tensor:
    if isinstance(init, torch.Tensor):
        init = _as_batch(init, "init")
        return F.interpolate(init, size=content.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    if init == "content":
        return content.clone()
    if init == "noise":
        return _noise(content, seed)
    raise ValueError(f"init must be 'content', 'noise' or an image tensor, got {init!r}.")


def shuffle_positions(features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Permute the H·W positions of a (B, C, H, W) or (C, H, W) feature map.

    The same permutation applies to every channel, so each C-vector survives
    intact but lands elsewhere: the layout is destroyed, the Gram matrix is not.

    Examples
    --------
    >>> f = torch.rand(4, 5, 6)
    >>> torch.allclose(gram_matrix(shuffle_positions(f)), gram_matrix(f))
    True
    """
    _check_tensor(features, "features", (3, 4))
    perm = torch.randperm(features.shape[-2] * features.shape[-1], generator=torch.Generator().manual_seed(seed))
    return features.flatten(start_dim=-2)[..., perm.to(features.device)].reshape(features.shape)


def calibrated_style_weight(
    content: torch.Tensor,
    style: torch.Tensor,
    ratio: float = 1.0,
    content_layer: str = "relu4_2",
    style_layers: Sequence[str] = STYLE_LAYERS,
    size: int | None = None,
    net: VGGFeatures | None = None,
) -> float:
    r"""A style weight β that puts both terms on the same scale, times ``ratio``.

    .. math:: \beta = r \, \frac{L_{content}(\text{noise})}{L_{style}(\text{content image})}

    How large the content and style losses are depends on the network's
    activation scale (trained or random weights, image size), so a fixed β
    means different things for different networks. With this β, the style
    term of the content image equals r times the content term of a noise
    image: r = 1 balances "how far the photo is from the style" against "how
    far noise is from the photo", and r sweeps the trade-off scale-free.

    Parameters
    ----------
    content, style : torch.Tensor, shape (3, H, W) or (1, 3, H, W), values in [0, 1]
    ratio : float, default=1.0
        r > 0; larger means more style.
    content_layer, style_layers, size, net
        As in :func:`style_transfer`.

    Returns
    -------
    float
        β to pass as ``style_weight`` (with ``content_weight=1``).

    Examples
    --------
    >>> beta = calibrated_style_weight(assets.load_image("tubingen"),
    ...                                assets.load_image("starry_night"), size=64)  # doctest: +SKIP
    """
    if not isinstance(ratio, (int, float)) or ratio <= 0:
        raise ValueError(f"ratio must be a positive number, got {ratio!r}.")
    content = _resize(_as_batch(content, "content"), size)
    style = _resize(_as_batch(style, "style"), size)
    net = net or VGGFeatures([content_layer, *style_layers])
    targets = _style_targets(net, style, style_layers)
    noise = _noise(content, seed=0)
    with torch.no_grad():
        feats, noise_feats = net(content), net(noise)
        content_scale = content_loss(noise_feats[content_layer], feats[content_layer])
        style_scale = _style_loss(feats, targets, _layer_weights(style_layers, None))
    return float(ratio * content_scale / style_scale)


# ------------------------------------------------------------------------- Try it


def style_widget(content: str = "tubingen", style: str = "starry_night", ratio: float = 1.0,
                 layers: str = "all five blocks", size: int | None = None,
                 steps: int | None = None) -> ipywidgets.VBox:
    """Try it: style transfer with a chosen content, style, style/content ratio and style layers.

    Each press of "Run" optimises ``steps`` L-BFGS steps at ``size`` pixels (defaults from
    ``config.pick``) from the content image, with the style weight calibrated so that
    ``ratio`` = 1 balances the two terms (:func:`utils.calibrated_style_weight`).
    """
    size = size or config.pick(full=128, fast=48)
    steps = steps or config.pick(full=25, fast=5)
    layer_sets = {"block 1 only": ("relu1_1",), "blocks 1-2": ("relu1_1", "relu2_1"),
                  "blocks 1-3": ("relu1_1", "relu2_1", "relu3_1"), "all five blocks": STYLE_LAYERS}
    if layers not in layer_sets:
        raise ValueError(f"layers must be one of {list(layer_sets)}, got {layers!r}.")

    def draw(content: str, style: str, ratio: float, layers: str) -> Figure:
        c, s = assets.load_image(content, size=size), assets.load_image(style, size=size)
        beta = calibrated_style_weight(c, s, ratio, style_layers=layer_sets[layers])
        image, _ = style_transfer(c, s, style_layers=layer_sets[layers], style_weight=beta,
                                               steps=steps)
        titles = [f"content: {content}", f"style: {style}", f"ratio {ratio:g}, {layers}, {steps} steps"]
        return plotting.show_images([c, s, image[0]], titles, size=3.2)

    return widgets.try_it(
        draw,
        run_button=True,
        content=ipywidgets.Dropdown(options=["tubingen", "chelsea", "astronaut", "coffee"], value=content,
                                 description="content"),
        style=ipywidgets.Dropdown(options=["starry_night", "shipwreck", "the_scream", "woman_with_hat"],
                               value=style, description="style"),
        ratio=ipywidgets.FloatLogSlider(value=ratio, base=10, min=-2, max=2, step=0.5, description="style/content"),
        layers=ipywidgets.Dropdown(options=list(layer_sets), value=layers, description="style layers"),
    )
