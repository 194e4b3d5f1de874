"""Chapter 6: adversarial examples, how to evaluate robustness honestly, and robust training.

* **Attacks** — :func:`fooling_image` (gradient ascent to a chosen class),
  :func:`fgsm` (one signed step), :func:`pgd` (projected gradient descent in the
  L∞ or L2 ball, with random restarts and the worst case kept per example).
* **Evaluation** — :func:`robust_accuracy`, :func:`accuracy_vs_eps`,
  :func:`fooling_rate`, :func:`transfer_matrix` (examples crafted on one network,
  tested on others), :func:`robustness_report` and :func:`masking_checks` (the
  sanity checks that expose gradient masking).
* **The one easy min–max** — :func:`linear_robust_logits`: the exact worst case
  of a linear classifier over an L∞ ball, in closed form.
* **Robust training** — :func:`adversarial_loss` and :func:`linear_robust_loss`
  are loss functions for :func:`core.train`; :func:`mnist_model` trains
  standard, Madry (PGD), fast (FGSM with random start) and exactly robust
  linear MNIST models once, caches them and keeps their training record.

Shape letters: ``B`` images, ``C`` channels, ``H, W`` height and width, ``K``
classes, ``D = C·H·W`` pixels. Images are float tensors in [0, 1]; every course
model normalises its own input, so attacks work in pixel space and clamp to
[0, 1]. A budget ε is a fraction of the pixel range (ε = 2/255: two grey
levels). No function changes its inputs, a model's mode or its ``requires_grad``
flags.

References
----------
.. [1] C. Szegedy et al., "Intriguing properties of neural networks", ICLR 2014.
.. [2] I. Goodfellow, J. Shlens, C. Szegedy, "Explaining and harnessing
   adversarial examples", ICLR 2015.
.. [3] A. Madry et al., "Towards deep learning models resistant to adversarial
   attacks", ICLR 2018.
.. [4] E. Wong, L. Rice, J. Z. Kolter, "Fast is better than free: revisiting
   adversarial training", ICLR 2020.
.. [5] A. Athalye, N. Carlini, D. Wagner, "Obfuscated gradients give a false
   sense of security", ICML 2018.
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import assets, config, core, models, plotting, widgets

__all__ = [
    "loss_gradient",
    "fooling_image",
    "fgsm",
    "project_linf",
    "project_l2",
    "pgd",
    "linear_robust_logits",
    "still_correct",
    "robust_accuracy",
    "accuracy_vs_eps",
    "fooling_rate",
    "photo_crops",
    "transfer_matrix",
    "masked_gradients",
    "robustness_report",
    "masking_checks",
    "adversarial_loss",
    "linear_robust_loss",
    "mnist_model",
    "training_record",
    "training_seconds",
    "plot_attack",
    "plot_matrix",
    "plot_fooling_rates",
    "plot_records",
    "plot_gradients",
    "adversarial_widget",
]

Attack = Callable[..., torch.Tensor]
NORMS = ("linf", "l2")


# --------------------------------------------------------------------------- checks


def _check_attack(model: nn.Module, x: object, y: object, eps: object, norm: str = "linf"):
    """(model, x as a batch on the model's device, y on that device, eps) after the shared checks."""
    core.check_model(model)
    batch = core.check_images(x, model=model)
    y = core.check_labels(y, len(batch)).to(batch.device)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
    eps = core.check_number(eps, "eps", high=1.0 if norm == "linf" else np.inf)
    return batch, y, eps


def _like_input(result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``result`` (B, C, H, W) back in the shape and on the device of the caller's ``x``."""
    return result.detach().reshape(x.shape).to(x.device)


# --------------------------------------------------------------------------- attacks


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Gradient of the cross-entropy loss with respect to the input pixels.

    .. math:: g = \nabla_x J(\theta, x, y), \qquad J = -\log \operatorname{softmax}(f_\theta(x))_y

    Summed over the batch, so each image gets the gradient of its own loss.
    This is the direction FGSM and PGD follow.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    x : Tensor (B, C, H, W) or (C, H, W)
        Images in [0, 1].
    y : Tensor (B,)
        Integer class labels.

    Returns
    -------
    Tensor, shape of ``x``
        :math:`\nabla_x J` per image.

    References
    ----------
    Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> loss_gradient(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1])).shape
    torch.Size([3, 1, 2, 2])
    """
    batch, y, _ = _check_attack(model, x, y, 0.0)
    with core.inspection_mode(model), torch.enable_grad():  # works inside a caller's torch.no_grad() too
        batch.requires_grad_(True)
        loss = F.cross_entropy(model(batch), y, reduction="sum")
        return _like_input(torch.autograd.grad(loss, batch)[0], x)


def fooling_image(
    model: nn.Module, x: torch.Tensor, target: int, lr: float = 0.01, max_steps: int = 100
) -> tuple[torch.Tensor, int]:
    r"""Change an image by gradient ascent until the model calls it ``target``.

    .. math::
        x_{t+1} = \operatorname{clip}_{[0,1]}\Big(x_t + \mathrm{lr}\,
        \frac{\nabla_x s_c(x_t)}{\|\nabla_x s_c(x_t)\|_\infty}\Big),
        \qquad s_c = \log \operatorname{softmax}(f(x))_c,

    stopping at the first :math:`t` with :math:`\arg\max f(x_t) = c`. The
    normalisation makes ``lr`` the largest change of any pixel in one step.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    x : Tensor (C, H, W) or (1, C, H, W)
        The image to start from, in [0, 1]; it is not modified.
    target : int
        The class the model should end up predicting.
    lr : float, default=0.01
        The largest pixel change per step.
    max_steps : int, default=100
        Give up after this many steps (check the prediction of the result).

    Returns
    -------
    image : Tensor, shape of ``x``
        The fooling image.
    steps : int
        Gradient steps taken (0 if the model already predicted ``target``).

    References
    ----------
    Szegedy et al., "Intriguing properties of neural networks", ICLR 2014.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
    ...     _ = net[1].bias.copy_(torch.tensor([-1.9, 0.0]))
    >>> image, steps = fooling_image(net, torch.full((1, 2, 2), 0.5), target=1, lr=0.1)
    >>> steps, round(image.max().item(), 4)
    (1, 0.4)
    """
    core.check_model(model)
    image = core.check_images(x, model=model, single=True)
    lr = core.check_number(lr, "lr", high=1.0, low_open=True)
    max_steps = core.check_int(max_steps, "max_steps")
    steps = 0
    with core.inspection_mode(model), torch.enable_grad():
        classes = model(image).shape[1]
        target = core.check_int(target, "target", minimum=0, maximum=classes - 1)
        while steps < max_steps:
            image.requires_grad_(True)
            log_probs = F.log_softmax(model(image), dim=1)
            if log_probs.argmax(1).item() == target:
                break
            grad = torch.autograd.grad(log_probs[0, target], image)[0]
            image = (image.detach() + lr * grad / grad.abs().max().clamp_min(1e-12)).clamp(0, 1)
            steps += 1
    return _like_input(image, x), steps


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, targeted: bool = False) -> torch.Tensor:
    r"""Fast gradient sign method: one step of size ε along the sign of the loss gradient.

    .. math::
        x' = \operatorname{clip}_{[0,1]}\big(x + \varepsilon\,\operatorname{sign}\nabla_x J(\theta, x, y)\big)

    The sign maximises the linearised loss :math:`J(x) + \delta^\top \nabla_x J`
    over the L∞ ball :math:`\|\delta\|_\infty \le \varepsilon`. Targeted (``y``
    then holds the target classes), the step goes *down* the target's loss:
    :math:`x' = \operatorname{clip}(x - \varepsilon\,\operatorname{sign}\nabla_x J(\theta, x, y_{\text{target}}))`.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    x : Tensor (B, C, H, W) or (C, H, W)
        Clean images in [0, 1].
    y : Tensor (B,)
        True labels, or target labels when ``targeted``.
    eps : float
        L∞ budget in pixel units, e.g. 2/255.
    targeted : bool, default=False
        Move towards ``y`` instead of away from it.

    Returns
    -------
    Tensor, shape of ``x``
        Adversarial images, :math:`\|x' - x\|_\infty \le \varepsilon`, in [0, 1].

    References
    ----------
    Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1])
    >>> bool((fgsm(net, x, y, eps=0.1) - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    batch, labels, eps = _check_attack(model, x, y, eps)
    direction = -1.0 if targeted else 1.0
    step = direction * eps * loss_gradient(model, batch, labels).sign()
    return _like_input((batch + step).clamp(0, 1), x)


def _check_pair(x_adv: object, x: object) -> None:
    if not isinstance(x_adv, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise TypeError(f"x_adv and x must be tensors, got {type(x_adv).__name__} and {type(x).__name__}.")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv and x must have the same shape, got {tuple(x_adv.shape)} and {tuple(x.shape)}.")


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    r"""Project onto the L∞ ball of radius ε around ``x``, intersected with [0, 1].

    .. math::
        \Pi(x') = \operatorname{clip}_{[0,1]}\big(x + \operatorname{clip}_{[-\varepsilon,\varepsilon]}(x' - x)\big)

    Both sets are boxes, so the projection onto their intersection is a
    coordinate-wise clip, and the two clips may be applied one after the other.

    Parameters
    ----------
    x_adv : Tensor (B, C, H, W)
        Point to project.
    x : Tensor (B, C, H, W)
        Centre of the ball (the clean images, in [0, 1]).
    eps : float
        Radius.

    Returns
    -------
    Tensor (B, C, H, W)

    Examples
    --------
    >>> project_linf(torch.tensor([0.9, 0.0]), torch.tensor([0.5, 0.05]), eps=0.1)
    tensor([0.6000, 0.0000])
    """
    _check_pair(x_adv, x)
    eps = core.check_number(eps, "eps", high=1.0)
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    r"""Scale ``x_adv - x`` back into the L2 ball of radius ε of each image, then clip to [0, 1].

    .. math::
        \Pi(x') = \operatorname{clip}_{[0,1]}\Big(x + \delta \min\big(1, \tfrac{\varepsilon}{\|\delta\|_2}\big)\Big),
        \qquad \delta = x' - x

    The first step is the exact projection onto the ball; the clip keeps pixels
    valid and can only shorten :math:`\delta` (the usual approximation of the
    projection onto ball ∩ box, as in Madry et al.'s and torchattacks' L2 PGD).

    Parameters
    ----------
    x_adv, x : Tensor (B, C, H, W)
        Point to project and the centres (clean images in [0, 1]).
    eps : float
        Radius per image (a whole image's L2 norm, pixel units).

    Returns
    -------
    Tensor (B, C, H, W)

    Examples
    --------
    >>> project_l2(torch.tensor([[0.8, 0.9]]), torch.tensor([[0.5, 0.5]]), eps=0.25)
    tensor([[0.6500, 0.7000]])
    """
    _check_pair(x_adv, x)
    eps = core.check_number(eps, "eps")
    delta = x_adv - x
    norms = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.ndim - 1))
    return (x + delta * (eps / norms.clamp_min(1e-12)).clamp(max=1)).clamp(0, 1)


def _random_start(x: torch.Tensor, eps: float, norm: str, seed: int | None) -> torch.Tensor:
    """A random point of the ball around ``x`` (uniform per pixel for L∞; a uniform
    radius along a Gaussian direction for L2), clipped to [0, 1]."""
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed) if seed is not None else generator.seed()
    if norm == "linf":
        return project_linf(x + torch.empty_like(x).uniform_(-eps, eps, generator=generator), x, eps)
    direction = torch.empty_like(x).normal_(generator=generator)
    norms = direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    radius = torch.empty_like(norms).uniform_(0, 1, generator=generator)
    return (x + direction * radius * eps / norms).clamp(0, 1)


def _ascent_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(g) for L∞, g/‖g‖₂ for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    targeted: bool = False,
    restarts: int = 1,
    norm: str = "linf",
    seed: int | None = None,
) -> torch.Tensor:
    r"""Projected gradient descent: steepest-ascent steps on the loss, projected back into the ε-ball.

    .. math::
        x^{0} = \Pi(x + u),\ u \text{ random in the ball}, \qquad
        x^{t+1} = \Pi\big(x^{t} + \alpha\, s(\nabla_x J(\theta, x^{t}, y))\big),

    with :math:`s(g) = \operatorname{sign} g` and :math:`\Pi` = :func:`project_linf`
    for the L∞ ball, :math:`s(g) = g / \|g\|_2` and :func:`project_l2` for the
    L2 ball (targeted: :math:`-\alpha`, towards ``y``). This is the inner
    maximisation of Madry et al.'s robust optimisation. The step defaults to
    their rule :math:`\alpha = 2.5\,\varepsilon / \text{steps}`, so that the
    path can cross the ball and back. With ``restarts`` > 1 the attack runs
    from that many random starts and keeps, per example, the worst case: the
    first start that fools the model (reaches the target), otherwise the one
    with the highest loss. An example counts as robust only if every start fails.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    x : Tensor (B, C, H, W) or (C, H, W)
        Clean images in [0, 1].
    y : Tensor (B,)
        True labels, or target labels when ``targeted``.
    eps : float
        Radius in pixel units (L∞: at most 1; L2: the norm of a whole image's change).
    alpha : float or None, default=None
        Step size; None gives 2.5 ε / steps.
    steps : int, default=10
    random_start : bool, default=True
        Start from a random point of the ball (Madry et al.); False starts at ``x``.
    targeted : bool, default=False
        Descend the loss of the target classes ``y``.
    restarts : int, default=1
        Random starts; the worst case per example is returned.
    norm : {"linf", "l2"}, default="linf"
    seed : int or None, default=None
        Restart r draws its start from a generator seeded ``seed + r`` (the
        global generator is untouched); None draws fresh randomness.

    Returns
    -------
    Tensor, shape of ``x``
        Adversarial images within distance ε of ``x``, in [0, 1].

    References
    ----------
    Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1])
    >>> x_adv = pgd(net, x, y, eps=0.1, steps=5, restarts=2, seed=0)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    batch, labels, eps = _check_attack(model, x, y, eps, norm)
    steps, restarts = core.check_int(steps, "steps"), core.check_int(restarts, "restarts")
    alpha = 2.5 * eps / steps if alpha is None else core.check_number(alpha, "alpha")
    if restarts > 1 and not random_start:
        raise ValueError(f"restarts={restarts} needs random_start=True: without it every restart is the same.")
    project = project_linf if norm == "linf" else project_l2
    direction = -1.0 if targeted else 1.0
    worst = _WorstCase(model, batch, labels, targeted, compare=restarts > 1)
    for restart in range(restarts):
        todo = worst.not_yet_fooled()  # an image fooled by one start stays fooled: later starts skip it
        if len(todo) == 0:
            break
        start = _random_start(batch, eps, norm, None if seed is None else seed + restart) if random_start else batch
        x_adv, clean, y_todo = start[todo], batch[todo], labels[todo]
        for _ in range(steps):
            step = _ascent_step(loss_gradient(model, x_adv, y_todo), norm)
            x_adv = project(x_adv + direction * alpha * step, clean, eps)
        worst.update(todo, x_adv)
    return _like_input(worst.images, x)


class _WorstCase:
    """Per example, the worst adversarial image over random restarts: the first one that fools the
    model (reaches the target), otherwise the one with the highest loss (lowest target loss)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool, compare: bool):
        self.model, self.y, self.targeted, self.compare = model, y, targeted, compare
        self.images = x.clone()
        self.fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.loss = torch.full((len(x),), -torch.inf, device=x.device)

    def not_yet_fooled(self) -> torch.Tensor:
        return (~self.fooled).nonzero().squeeze(1)

    def update(self, todo: torch.Tensor, x_adv: torch.Tensor) -> None:
        if not self.compare:  # a single start: nothing to compare with
            self.images[todo] = x_adv
            return
        with torch.no_grad(), core.inspection_mode(self.model):
            logits = self.model(x_adv)
        y = self.y[todo]
        loss = F.cross_entropy(logits, y, reduction="none") * (-1 if self.targeted else 1)
        success = (logits.argmax(1) == y) if self.targeted else (logits.argmax(1) != y)
        better = success | (loss > self.loss[todo])
        self.images[todo[better]] = x_adv[better]
        self.loss[todo] = torch.maximum(loss, self.loss[todo])
        self.fooled[todo] = success


# --------------------------------------------------------------------------- the linear case in closed form


def _linear_layer(model: nn.Module) -> nn.Linear:
    """The one ``nn.Linear`` of a linear classifier ``Sequential(Flatten, Linear)`` on pixels."""
    core.check_model(model)
    layers = [m for m in model.modules() if not isinstance(m, (nn.Sequential, nn.Flatten))]
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear):
        raise ValueError(f"A linear classifier nn.Sequential(nn.Flatten(), nn.Linear(D, K)) on [0, 1] pixels is "
                         f"expected (mnist_model('linear') is one), got layers {[type(m).__name__ for m in layers]}.")
    return layers[0]


def linear_robust_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    r"""Worst-case logits of a linear classifier over the L∞ ball ∩ [0, 1], in closed form.

    For logits :math:`z = Wx + b` the change of the margin of class :math:`j`
    over the true class :math:`y` is linear in :math:`\delta`, so its maximum over
    the box :math:`\ell_i \le \delta_i \le u_i`,
    :math:`\ell = \max(-\varepsilon, -x)`, :math:`u = \min(\varepsilon, 1 - x)`,
    is taken coordinate by coordinate:

    .. math::
        \tilde z_j = z_j + \max_{\delta}\,(w_j - w_y)^\top \delta
                   = z_j + \sum_i \max\big((w_j - w_y)_i\,\ell_i,\ (w_j - w_y)_i\,u_i\big),
        \qquad \tilde z_y = z_y .

    Without the pixel box this is :math:`z_j + \varepsilon\|w_j - w_y\|_1`; for two
    classes and :math:`y = \pm 1`, the worst margin is :math:`y(w^\top x + b) - \varepsilon\|w\|_1`.
    The image is robust (no point of the ball changes its class) exactly when
    :math:`\arg\max_j \tilde z_j = y`, and :math:`\mathrm{CE}(\tilde z, y)` is the exact
    worst-case cross-entropy for two classes and an upper bound on it for more:
    the one case where Madry et al.'s inner maximisation needs no attack.

    Parameters
    ----------
    model : nn.Module
        ``nn.Sequential(nn.Flatten(), nn.Linear(D, K))`` on [0, 1] pixels.
    x : Tensor (B, C, H, W)
        Images in [0, 1].
    y : Tensor (B,)
        True labels.
    eps : float
        L∞ radius.

    Returns
    -------
    Tensor (B, K)
        :math:`\tilde z`, differentiable in the model's parameters.

    References
    ----------
    J. Z. Kolter, A. Madry, "Adversarial robustness: theory and practice",
    NeurIPS 2018 tutorial, chapter 2 (linear models); Goodfellow et al., ICLR 2015, section 3.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]])), net[1].bias.zero_()
    >>> linear_robust_logits(net, torch.tensor([[[[0.5, 0.5]]]]), torch.tensor([1]), eps=0.1)
    tensor([[0.2000, 0.0000]], grad_fn=<AddBackward0>)
    """
    layer = _linear_layer(model)
    batch, labels, eps = _check_attack(model, x, y, eps)
    pixels = batch.flatten(1)
    if pixels.shape[1] != layer.in_features:
        raise ValueError(f"x has {pixels.shape[1]} pixels per image, the model expects {layer.in_features}.")
    low, high = (-pixels).clamp(min=-eps), (1 - pixels).clamp(max=eps)
    towards = layer.weight[None] - layer.weight[labels][:, None]  # (B, K, D): w_j - w_y
    worst = torch.maximum(towards * low[:, None], towards * high[:, None]).sum(-1)
    return layer(pixels) + worst


# --------------------------------------------------------------------------- evaluation


def _resolve_attack(attack: Attack | str | None) -> Attack | None:
    named = {"fgsm": fgsm, "pgd": pgd}
    if attack is None or callable(attack):
        return attack
    if isinstance(attack, str) and attack.lower() in named:
        return named[attack.lower()]
    raise ValueError(f"attack must be None, 'fgsm', 'pgd' or a function attack(model, x, y, **kwargs), "
                     f"got {attack!r}.")


def _attack_all(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack | None, batch_size: int,
                **attack_kwargs) -> torch.Tensor:
    """``attack`` applied batch by batch (bounded memory); ``x`` itself when ``attack`` is None."""
    if attack is None:
        return x
    return torch.cat([attack(model, xb, yb, **attack_kwargs).cpu()
                      for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)])


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a dataset's ``(x, y)`` pairs as two tensors."""
    data = core.as_dataset(data)
    x, y = next(iter(DataLoader(data, batch_size=len(data))))
    return x, y


def still_correct(
    model: nn.Module, data: Dataset, attack: Attack | str | None = None, batch_size: int = 256, **attack_kwargs
) -> torch.Tensor:
    r"""Per example: is the prediction on the attacked image still the label?

    .. math:: c_i = \mathbf{1}\big[\arg\max f(x_i') = y_i\big], \qquad x_i' = \mathrm{attack}(x_i, y_i)

    Parameters
    ----------
    model : nn.Module
    data : Dataset of (x, y)
        e.g. ``assets.mnist(train=False)``.
    attack : callable, "fgsm", "pgd" or None, default=None
        ``attack(model, x, y, **attack_kwargs) -> x_adv``; None: the clean images.
    batch_size : int, default=256
    **attack_kwargs
        Passed on, e.g. ``eps=0.3, steps=100, restarts=5``.

    Returns
    -------
    Tensor (N,) of bool

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> data = TensorDataset(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 1, 0, 1]))
    >>> still_correct(net, data, "fgsm", eps=0.0).tolist() == still_correct(net, data).tolist()
    True
    """
    core.check_model(model)
    attack = _resolve_attack(attack)
    x, y = _tensors(data)
    batch_size = core.check_int(batch_size, "batch_size")
    return core.predict(model, _attack_all(model, x, y, attack, batch_size, **attack_kwargs)) == y


def robust_accuracy(
    model: nn.Module, data: Dataset, attack: Attack | str | None = None, batch_size: int = 256, **attack_kwargs
) -> float:
    r"""Accuracy on attacked images: the fraction still classified correctly.

    .. math:: \frac{1}{N}\sum_i \mathbf{1}\big[\arg\max f(x_i') = y_i\big], \qquad x_i' = \mathrm{attack}(x_i, y_i)

    An *upper bound* on the true robust accuracy: a stronger attack can only lower it.

    Parameters
    ----------
    model, data, attack, batch_size, **attack_kwargs
        As in :func:`still_correct`.

    Returns
    -------
    float in [0, 1]

    References
    ----------
    Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> data = TensorDataset(torch.rand(8, 1, 2, 2), torch.randint(0, 2, (8,)))
    >>> robust_accuracy(net, data, "pgd", eps=0.3, seed=0) <= robust_accuracy(net, data)
    True
    """
    return still_correct(model, data, attack, batch_size, **attack_kwargs).float().mean().item()


def accuracy_vs_eps(
    model: nn.Module, data: Dataset, epsilons: Sequence[float], attack: Attack | str = "fgsm",
    progress: bool = True, **attack_kwargs
) -> list[float]:
    """:func:`robust_accuracy` at each ε of ``epsilons``, attacked at every ε (ε = 0 included).

    Parameters
    ----------
    model : nn.Module
    data : Dataset of (x, y)
    epsilons : sequence of float
        Budgets in pixel units.
    attack : callable, "fgsm" or "pgd", default="fgsm"
    progress : bool, default=True
    **attack_kwargs
        Passed to the attack (PGD's step follows each ε through its default 2.5 ε / steps).

    Returns
    -------
    list of float, one accuracy per ε

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> data = TensorDataset(torch.rand(8, 1, 2, 2), torch.randint(0, 2, (8,)))
    >>> curve = accuracy_vs_eps(net, data, [0.0, 0.5], "pgd", steps=3, seed=0)
    >>> curve[0] == robust_accuracy(net, data) and curve[1] <= curve[0]
    True
    """
    if isinstance(epsilons, (int, float)) or not len(epsilons):
        raise ValueError(f"epsilons must be a non-empty sequence of budgets, e.g. [0, 2/255, 4/255], got {epsilons!r}.")
    return [robust_accuracy(model, data, attack, eps=eps, **attack_kwargs)
            for eps in core.progress_bar(list(epsilons), progress=progress, desc="accuracy vs ε")]


def fooling_rate(
    model: nn.Module, images: torch.Tensor, epsilons: Sequence[float], attack: Attack | str = "fgsm",
    batch_size: int = 4, progress: bool = True, **attack_kwargs
) -> list[float]:
    r"""Fraction of images whose predicted class an attack changes, at each ε.

    .. math:: \mathrm{rate}(\varepsilon) = \frac{1}{N}\sum_i \mathbf{1}\big[\arg\max f(x_i') \ne \arg\max f(x_i)\big]

    The reference label of each image is the model's own prediction on it
    (photos have no ground-truth ImageNet label), so ε = 0 gives 0.

    Parameters
    ----------
    model : nn.Module
    images : Tensor (N, C, H, W)
        Clean images in [0, 1].
    epsilons : sequence of float
    attack : callable, "fgsm" or "pgd", default="fgsm"
    batch_size : int, default=4
        Images attacked at once (memory: four 224-pixel images through
        EfficientNet-Lite2 and back take about 0.4 GiB).
    progress : bool, default=True
    **attack_kwargs
        Passed to the attack.

    Returns
    -------
    list of float, one rate per ε

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> fooling_rate(net, torch.rand(6, 1, 2, 2), [0.0, 1.0])
    [0.0, 1.0]
    """
    images = core.check_images(images, "images", model=model).cpu()
    data = TensorDataset(images, core.predict(model, images))
    return [1 - acc for acc in accuracy_vs_eps(model, data, epsilons, attack, progress=progress,
                                               batch_size=batch_size, **attack_kwargs)]


def photo_crops(
    size: int = 224, crops: int = 3, names: Sequence[str] = assets.PHOTOS
) -> tuple[torch.Tensor, list[str]]:
    """Square crops of the course photos, ImageNet-style: each photo resized to shorter side
    ``round(size * 8 / 7)`` (256 for 224), then ``crops`` crops of ``size`` pixels spread along the
    diagonal from the top-left to the bottom-right corner (the centre crop when ``crops`` is 1).

    Parameters
    ----------
    size : int, default=224
    crops : int, default=3
    names : sequence of str, default=assets.PHOTOS

    Returns
    -------
    images : Tensor (len(names) * crops, 3, size, size)
    labels : list of str
        ``"name/k"`` per crop.

    Examples
    --------
    >>> images, labels = photo_crops(size=32, crops=2, names=["chelsea"])
    >>> tuple(images.shape), labels
    ((2, 3, 32, 32), ['chelsea/0', 'chelsea/1'])
    """
    size, crops = core.check_int(size, "size", minimum=8), core.check_int(crops, "crops")
    images, labels = [], []
    for name in names:
        image = assets.load_image(name, size=round(size * 8 / 7))
        h, w = image.shape[-2:]
        for k, offset in enumerate(np.linspace(0, 1, crops) if crops > 1 else [0.5]):
            top, left = round(offset * (h - size)), round(offset * (w - size))
            images.append(image[:, top:top + size, left:left + size])
            labels.append(f"{name}/{k}")
    return torch.stack(images), labels


def _check_sources(networks: object, sources: Sequence[str] | None) -> list[str]:
    if not isinstance(networks, Mapping) or not networks:
        raise TypeError(f"networks must be a non-empty dict {{name: model}}, got {type(networks).__name__}.")
    sources = list(networks) if sources is None else list(sources)
    unknown = [s for s in sources if s not in networks]
    if unknown:
        raise ValueError(f"sources {unknown} are not among the networks {list(networks)}.")
    return sources


def transfer_matrix(
    networks: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    attack: Attack | str = "pgd",
    sources: Sequence[str] | None = None,
    batch_size: int = 4,
    **attack_kwargs,
) -> pd.DataFrame:
    """Accuracy of every network on adversarial examples crafted on each source network.

    Entry (s, t) is the fraction of ``attack(networks[s], x)`` that network t
    still gives its reference label: ``y`` when given (MNIST), otherwise t's own
    prediction on the clean image (photos). The diagonal is the white-box
    attack; the rest is *transfer*, an attack that needs no access to t's
    gradients (Szegedy et al. 2014; Goodfellow et al. 2015). The last row,
    "clean", is each network's accuracy without attack.

    Parameters
    ----------
    networks : mapping of str to nn.Module
        Models compared (the columns).
    x : Tensor (N, C, H, W)
        Clean images in [0, 1].
    y : Tensor (N,), optional
        True labels.
    attack : callable, "fgsm" or "pgd", default="pgd"
    sources : sequence of str, optional
        Networks that craft attacks (the rows); default all.
    batch_size : int, default=4
        Images attacked at once (memory).
    **attack_kwargs
        Passed to the attack, e.g. ``eps=4/255``.

    Returns
    -------
    DataFrame
        Rows ``"crafted on <source>"`` and ``"clean"``, columns the networks.

    Examples
    --------
    >>> nets = {"a": nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "b": nn.Sequential(nn.Flatten(), nn.Linear(4, 2))}
    >>> table = transfer_matrix(nets, torch.rand(6, 1, 2, 2), attack="fgsm", eps=1.0)
    >>> list(table.index), table.loc["clean"].tolist()
    (['crafted on a', 'crafted on b', 'clean'], [1.0, 1.0])
    """
    x, attack, sources = core.check_images(x).cpu(), _resolve_attack(attack), _check_sources(networks, sources)
    reference = {name: (core.check_labels(y, len(x)) if y is not None else core.predict(net, x))
                 for name, net in networks.items()}
    rows = {}
    for source in core.progress_bar(sources, desc="transfer"):
        x_adv = _attack_all(networks[source], x, reference[source], attack, batch_size, **attack_kwargs)
        rows[f"crafted on {source}"] = {t: (core.predict(net, x_adv) == reference[t]).float().mean().item()
                                        for t, net in networks.items()}
    rows["clean"] = {t: (core.predict(net, x) == reference[t]).float().mean().item() for t, net in networks.items()}
    return pd.DataFrame(rows).T


class _ScaledLogits(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.scale


def masked_gradients(model: nn.Module, scale: float = 1e4) -> nn.Sequential:
    r"""The same classifier with its logits multiplied by ``scale``: a "defence" that only hides the gradient.

    .. math:: \tilde f(x) = s\, f(x), \qquad \arg\max \tilde f = \arg\max f

    The decisions are unchanged, but the softmax saturates: for a confident
    prediction :math:`\operatorname{softmax}(s f(x))` is exactly one-hot in
    float32, so :math:`\nabla_x J` is exactly 0 and gradient attacks stall.
    This is what defensive distillation does at test time; transfer attacks
    from the unscaled model still work, which :func:`masking_checks` detects.

    Parameters
    ----------
    model : nn.Module
    scale : float, default=1e4

    Returns
    -------
    nn.Sequential(model, scale)

    References
    ----------
    N. Carlini, D. Wagner, "Defensive distillation is not robust to adversarial
    examples", arXiv:1607.04311, 2016; Athalye, Carlini, Wagner, ICML 2018.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.rand(3, 1, 2, 2)
    >>> torch.equal(core.predict(masked_gradients(net), x), core.predict(net, x))
    True
    """
    core.check_model(model)
    scale = core.check_number(scale, "scale", low_open=True)
    masked = nn.Sequential(OrderedDict(net=model, scale=_ScaledLogits(scale)))
    masked.arch = f"{getattr(model, 'arch', type(model).__name__)} with masked gradients"
    return masked.eval()


def robustness_report(
    model: nn.Module,
    data: Dataset,
    eps: float,
    l2_eps: float,
    transfer_from: nn.Module | None = None,
    steps: tuple[int, int] = (10, 100),
    restarts: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> pd.Series:
    """Robust accuracy under the attacks a reviewer asks for, and the worst case over all of them.

    Rows: ``clean``; ``PGD, ε = 0`` (must equal clean); ``FGSM``; ``PGD-{k}``
    for the two step counts (random start); ``PGD-{K} × {R} restarts`` (worst
    case per example); ``L2 PGD-{K}`` at radius ``l2_eps``; ``transfer`` —
    PGD-{k} examples crafted on ``transfer_from`` (a black-box attack); and
    ``worst case`` — an example counts as robust only if it survives every
    attack above (the number to report). Each PGD uses the step 2.5 ε / steps.

    Parameters
    ----------
    model : nn.Module
    data : Dataset of (x, y)
    eps : float
        L∞ radius.
    l2_eps : float
        L2 radius.
    transfer_from : nn.Module, optional
        Source of the transfer attack (e.g. an independently trained network).
    steps : (int, int), default=(10, 100)
    restarts : int, default=5
    seed : int, default=0
    progress : bool, default=True

    Returns
    -------
    Series
        Accuracy per attack (index as above).

    References
    ----------
    Athalye, Carlini, Wagner, "Obfuscated gradients give a false sense of
    security", ICML 2018; N. Carlini et al., "On evaluating adversarial robustness", arXiv:1902.06705, 2019.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> data = TensorDataset(torch.rand(8, 1, 2, 2), torch.randint(0, 2, (8,)))
    >>> report = robustness_report(net, data, eps=0.1, l2_eps=0.2, steps=(2, 4), restarts=2, progress=False)
    >>> bool(report["worst case"] <= report["PGD-4 × 2 restarts"] <= report["clean"])
    True
    """
    short, long = (core.check_int(k, "steps") for k in steps)
    pgd_kwargs = dict(attack=pgd, seed=seed)
    attacks = {"clean": {}, "PGD, ε = 0": dict(pgd_kwargs, eps=0.0, steps=short), "FGSM": dict(attack=fgsm, eps=eps),
               f"PGD-{short}": dict(pgd_kwargs, eps=eps, steps=short),
               f"PGD-{long}": dict(pgd_kwargs, eps=eps, steps=long),
               f"PGD-{long} × {restarts} restarts": dict(pgd_kwargs, eps=eps, steps=long, restarts=restarts),
               f"L2 PGD-{long}": dict(pgd_kwargs, eps=l2_eps, steps=long, norm="l2")}
    correct = {name: still_correct(model, data, **kwargs)
               for name, kwargs in core.progress_bar(attacks.items(), progress=progress, desc="attacks")}
    if transfer_from is not None:
        correct["transfer"] = _transferred(transfer_from, model, data, eps, short, seed)
    attacked = [c for name, c in correct.items() if name not in ("clean", "PGD, ε = 0")]
    correct["worst case"] = torch.stack(attacked).all(0)
    return pd.Series({name: c.float().mean().item() for name, c in correct.items()}, name="accuracy")


def _transferred(source: nn.Module, target: nn.Module, data: Dataset, eps: float, steps: int, seed: int):
    """Per example: is ``target`` still right on PGD examples crafted on ``source``?"""
    x, y = _tensors(data)
    x_adv = _attack_all(source, x, y, pgd, 256, eps=eps, steps=steps, seed=seed)
    return core.predict(target, x_adv) == y


def masking_checks(report: pd.Series, tolerance: float = 0.0) -> dict[str, bool]:
    """The sanity checks of a :func:`robustness_report` that catch gradient masking.

    * ``ε = 0 gives the clean accuracy`` — the attack code changes nothing it should not;
    * ``more steps never raise accuracy`` — FGSM ≥ PGD-k ≥ PGD-K;
    * ``restarts never raise accuracy`` — PGD-K ≥ PGD-K with restarts;
    * ``black-box is not stronger than white-box`` — transfer ≥ the strongest
      white-box attack (checked when the report has a transfer row).

    A failure means the gradient misleads the attacker (masking, saturation,
    non-differentiable steps) or the attack is misconfigured; either way the
    white-box numbers are not a robustness claim (Athalye et al. 2018).

    Parameters
    ----------
    report : Series
        From :func:`robustness_report`.
    tolerance : float, default=0.0
        Slack allowed in each inequality (a fraction of the examples): PGD paths
        of different lengths are random and not nested, so a few examples may
        differ by chance; a masked model violates the checks by far more.

    Returns
    -------
    dict of str to bool

    Examples
    --------
    >>> report = pd.Series({"clean": 0.9, "PGD, ε = 0": 0.9, "FGSM": 0.6, "PGD-10": 0.5, "PGD-100": 0.4,
    ...                     "PGD-100 × 5 restarts": 0.4, "transfer": 0.8})
    >>> all(masking_checks(report).values())
    True
    """
    pgd_rows = [name for name in report.index if name.startswith("PGD-")]
    short, long, restarted = pgd_rows[:3]
    ok = {"ε = 0 gives the clean accuracy": abs(report["PGD, ε = 0"] - report["clean"]) <= tolerance,
          "more steps never raise accuracy": report[long] <= report[short] + tolerance
          and report[short] <= report["FGSM"] + tolerance,
          "restarts never raise accuracy": report[restarted] <= report[long] + tolerance}
    if "transfer" in report.index:
        white_box = min(report[name] for name in ("FGSM", short, long, restarted))
        ok["black-box is not stronger than white-box"] = report["transfer"] >= white_box - tolerance
    return {name: bool(value) for name, value in ok.items()}


# --------------------------------------------------------------------------- robust training


def adversarial_loss(eps: float, steps: int = 10, alpha: float | None = None, seed: int = 0
                     ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    r"""A loss function for :func:`core.train` that attacks first: Madry et al.'s adversarial training.

    .. math::
        \min_\theta\ \mathbb{E}_{(x, y)}\Big[\max_{\|\delta\|_\infty \le \varepsilon} J(\theta, x + \delta, y)\Big]

    For each batch the inner maximum is approximated by :func:`pgd` (random
    start, ``steps`` steps of ``alpha``); by Danskin's theorem the gradient of
    the maximum is the gradient at the maximiser, so the outer step is ordinary
    training on the attacked batch. ``steps=1`` with ``alpha=1.25 * eps`` is
    Wong et al.'s *fast* adversarial training (FGSM from a random start).

    Parameters
    ----------
    eps : float
        L∞ radius.
    steps : int, default=10
    alpha : float or None, default=None
        PGD's step (None: 2.5 ε / steps).
    seed : int, default=0
        Seeds the random starts, batch after batch (reproducible training).

    Returns
    -------
    callable
        ``loss_fn(model, x, y) -> (loss, logits on the attacked batch)``.

    References
    ----------
    Madry et al., ICLR 2018; Wong, Rice, Kolter, "Fast is better than free", ICLR 2020.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> data = TensorDataset(torch.rand(16, 1, 2, 2), torch.randint(0, 2, (16,)))
    >>> history = core.train(net, data, epochs=2, loss_fn=adversarial_loss(eps=0.1, steps=3), progress=False)
    >>> len(history["train_acc"])
    2
    """
    eps, steps = core.check_number(eps, "eps", high=1.0), core.check_int(steps, "steps")
    batches = itertools.count(core.check_int(seed, "seed", minimum=0) * 1_000_003)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = pgd(model, x, y, eps, alpha, steps, seed=next(batches))  # inner max
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits  # outer min

    return loss_fn


def linear_robust_loss(eps: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor],
                                               tuple[torch.Tensor, torch.Tensor]]:
    r"""A loss function for :func:`core.train` that trains a linear classifier on its exact worst case.

    .. math:: \min_{W, b}\ \mathbb{E}\ \mathrm{CE}\big(\tilde z(x, y), y\big)

    with :math:`\tilde z` from :func:`linear_robust_logits`: no attack, the inner
    maximum is in closed form (exact for two classes, an upper bound for more).

    Parameters
    ----------
    eps : float
        L∞ radius.

    Returns
    -------
    callable
        ``loss_fn(model, x, y) -> (loss, worst-case logits)``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> data = TensorDataset(torch.rand(16, 1, 2, 2), torch.randint(0, 2, (16,)))
    >>> len(core.train(net, data, loss_fn=linear_robust_loss(0.1), progress=False)["loss"])
    1
    """
    eps = core.check_number(eps, "eps", high=1.0)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = linear_robust_logits(model, x, y, eps)
        return F.cross_entropy(logits, y), logits

    return loss_fn


_ARCHS = ("cnn", "mlp", "linear")
_METHODS = ("standard", "pgd", "fgsm", "exact")
_RECORD = ("seconds", "passes", "lr", "train_acc", "fgsm_acc", "pgd_acc")
_MONITOR = 200  # training digits held out to watch FGSM and PGD accuracy epoch by epoch


def _mnist_network(arch: str, seed: int) -> nn.Module:
    """An untrained MNIST classifier: the course CNN, a one-hidden-layer MLP, or a linear model on pixels."""
    torch.manual_seed(seed)
    if arch == "cnn":
        return models.MnistCNN()
    if arch == "mlp":
        return nn.Sequential(OrderedDict(normalize=models.Normalize(models.MNIST_MEAN, models.MNIST_STD),
                                         flatten=nn.Flatten(), fc1=nn.Linear(784, 256), relu1=nn.ReLU(),
                                         fc2=nn.Linear(256, 10)))
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(784, 10)))


def _attack_step(method: str, eps: float, alpha: float | None) -> float | None:
    """The attack step of a training method: Wong et al.'s α = 1.25 ε for "fgsm" unless given; otherwise
    ``alpha`` as given (None: :func:`adversarial_loss`'s 2.5 ε / steps)."""
    return 1.25 * eps if method == "fgsm" and alpha is None else alpha


def _training_loss(method: str, eps: float, steps: int, alpha: float | None, seed: int):
    if method == "standard":
        return core.cross_entropy_step
    if method == "exact":
        return linear_robust_loss(eps)
    return adversarial_loss(eps, steps if method == "pgd" else 1, alpha, seed)


def _one_cycle(epoch: int, epochs: int, peak: float) -> float:
    """Learning rate of an epoch: up linearly to ``peak`` at 2/5 of the run, then down to 0 (Wong et al.)."""
    return float(np.interp(epoch + 0.5, [0, 0.4 * epochs, epochs], [0, peak, 0]))


def _fit_with_record(model: nn.Module, train: Dataset, loss_fn, epochs: int, lr: float, eps: float,
                     early_stop: bool, seed: int) -> None:
    """Train with :func:`core.train`, one call per epoch (one-cycle learning rate), and record after each
    epoch the time, the network passes per training digit (attack steps and the training step alike,
    counted by a forward hook on the first layer with weights, which the exact linear loss calls too),
    and the FGSM and PGD-10 accuracy on held-out training digits; with ``early_stop``, keep the epoch
    whose PGD accuracy was best (Wong et al.'s guard against catastrophic overfitting)."""
    fit = TensorDataset(*(t[:-_MONITOR] for t in train.tensors))
    monitor = TensorDataset(*(t[-_MONITOR:] for t in train.tensors))
    record, seconds, seen = torch.full((epochs, len(_RECORD)), float("nan")), 0.0, [0]

    def count(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        seen[0] += len(inputs[0])

    first_layer = next(module for module in model.modules() if list(module.parameters(recurse=False)))
    for epoch in range(epochs):
        rate = _one_cycle(epoch, epochs, lr)
        counting = first_layer.register_forward_hook(count)
        try:
            history = core.train(model, fit, epochs=1, lr=rate, loss_fn=loss_fn, seed=seed + epoch,
                                 desc=f"epoch {epoch + 1}/{epochs}")
        finally:
            counting.remove()
        seconds += history["seconds"][-1]
        record[epoch] = torch.tensor([seconds, seen[0] / len(fit), rate, history["train_acc"][-1],
                                      robust_accuracy(model, monitor, fgsm, eps=eps),
                                      robust_accuracy(model, monitor, pgd, eps=eps, steps=10, seed=seed)])
        if record[epoch, -1] >= record[: epoch + 1, -1].max():
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
    if early_stop:
        model.load_state_dict(best_state)
    model.record.copy_(record)
    model.best_epoch.fill_(best_epoch)


def mnist_model(
    arch: str = "cnn",
    method: str = "standard",
    eps: float = 0.3,
    epochs: int | None = None,
    steps: int = 10,
    alpha: float | None = None,
    warm_start: bool = True,
    early_stop: bool = False,
    lr: float = 5e-3,
    seed: int = 0,
    cache: bool = True,
) -> nn.Module:
    """An MNIST classifier trained by the course with one of four methods, trained once and cached.

    ``method``: ``"standard"`` (cross-entropy), ``"pgd"`` (Madry et al.:
    :func:`adversarial_loss` with ``steps`` PGD steps), ``"fgsm"`` (Wong et al.'s
    fast adversarial training: one FGSM step of ``alpha`` from a random start,
    default α = 1.25 ε) or ``"exact"`` (linear models only: :func:`linear_robust_loss`).
    The adversarial methods start from the standard model's weights unless
    ``warm_start=False``. Training runs :func:`core.train` once per epoch with
    a one-cycle learning rate peaking at ``lr`` (Adam restarts each epoch), on
    :func:`assets.mnist`'s first ``config.pick(full=4000, fast=1000)`` training
    digits less the last 200, which are held out to record FGSM and PGD-10
    accuracy at radius ``eps`` after every epoch. :func:`training_record`
    returns that record (it travels in the cached state dict);
    :func:`core.cached_model` keys the cache by every setting.

    Parameters
    ----------
    arch : {"cnn", "mlp", "linear"}, default="cnn"
        :class:`models.MnistCNN`, a 256-unit MLP, or ``Sequential(Flatten, Linear)`` on pixels.
    method : {"standard", "pgd", "fgsm", "exact"}, default="standard"
    eps : float, default=0.3
        Training radius (L∞), and the radius of the recorded attacks.
    epochs : int or None, default=None
        ``config.pick(full=10, fast=3)`` when None.
    steps : int, default=10
        PGD steps per batch (method "pgd").
    alpha : float or None, default=None
        Attack step (None: 2.5 ε / steps for "pgd", 1.25 ε for "fgsm").
    warm_start : bool, default=True
        Adversarial methods start from ``mnist_model(arch, "standard")``.
    early_stop : bool, default=False
        Return the weights of the epoch with the best held-out PGD accuracy.
    lr : float, default=5e-3
        Peak learning rate.
    seed : int, default=0
    cache : bool, default=True

    Returns
    -------
    nn.Module
        In eval mode; ``train_seconds`` is the training time when it was trained
        in this call (None when loaded: see :func:`training_record`), and
        ``train_digits`` the number of digits it was trained on.

    References
    ----------
    Madry et al., ICLR 2018; Wong, Rice, Kolter, ICLR 2020.

    Examples
    --------
    Training takes seconds to minutes the first time, so the example is not run with the docstrings:

    >>> core.accuracy(mnist_model("mlp"), assets.mnist(train=False)) > 0.9  # doctest: +SKIP
    True
    """
    if arch not in _ARCHS or method not in _METHODS or (method == "exact" and arch != "linear"):
        raise ValueError(f"arch must be one of {_ARCHS} and method one of {_METHODS} ('exact' only for "
                         f"'linear'), got arch={arch!r}, method={method!r}.")
    eps, lr = core.check_number(eps, "eps", high=1.0), core.check_number(lr, "lr", low_open=True)
    epochs = core.check_int(epochs if epochs is not None else config.pick(full=10, fast=3), "epochs")
    alpha = _attack_step(method, eps, alpha)
    warm_start = warm_start and method in ("pgd", "fgsm")
    train = assets.mnist(train=True, n=config.pick(full=4000, fast=1000))

    def build() -> nn.Module:
        model = _mnist_network(arch, seed)
        model.register_buffer("record", torch.full((epochs, len(_RECORD)), float("nan")))
        model.register_buffer("best_epoch", torch.tensor(-1))
        return model

    def fit(model: nn.Module) -> None:
        if warm_start:
            weights = mnist_model(arch, "standard", lr=lr, seed=seed, cache=cache).state_dict()
            model.load_state_dict({k: v for k, v in weights.items() if k not in ("record", "best_epoch")},
                                  strict=False)
        _fit_with_record(model, train, _training_loss(method, eps, steps, alpha, seed), epochs, lr, eps,
                         early_stop, seed)

    settings = {"arch": arch, "method": method, "eps": eps, "epochs": epochs, "lr": lr, "alpha": alpha,
                "steps": steps if method == "pgd" else 0, "warm_start": warm_start, "early_stop": early_stop,
                "seed": seed, "data": f"{len(train)}:{assets.mnist_source()}", "version": 2}
    model = core.cached_model(f"mnist_{arch}_{method}", settings, build, fit, cache=cache)
    model.train_digits = len(train) - _MONITOR
    return model


def training_seconds(model: nn.Module, data: Dataset, methods: Sequence[str] = ("standard", "pgd", "fgsm"),
                     eps: float = 0.3, steps: int = 10, rounds: int = 3, seed: int = 0) -> pd.Series:
    """Wall seconds of one training epoch over ``data`` with each of :func:`mnist_model`'s methods, side by side.

    Each round trains a fresh copy of ``model`` for one epoch of :func:`core.train` with every method in
    turn, with the loss functions :func:`mnist_model` trains with (``steps`` PGD steps for "pgd", Wong et
    al.'s FGSM step of 1.25 ε for "fgsm"); each method's fastest round is returned (other work on the
    machine only ever adds time: the rule of Python's ``timeit``). Measured so, in one process and
    alternated, the ratios compare methods fairly; the seconds in a :func:`training_record` were measured
    whenever each cached model happened to be trained, on a machine that may have been busy.

    Parameters
    ----------
    model : nn.Module
        The starting weights (not changed).
    data : Dataset
    methods : sequence of {"standard", "pgd", "fgsm", "exact"}, default=("standard", "pgd", "fgsm")
    eps : float, default=0.3
    steps : int, default=10
        PGD steps per batch (method "pgd").
    rounds : int, default=3
    seed : int, default=0

    Returns
    -------
    pd.Series
        Seconds per epoch (the fastest round), by method.

    Examples
    --------
    >>> data = TensorDataset(torch.rand(64, 1, 4, 4), torch.randint(0, 2, (64,)))
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> seconds = training_seconds(net, data, ("standard", "pgd"), eps=0.1, steps=20)
    >>> bool(seconds["pgd"] > seconds["standard"])
    True
    """
    core.check_model(model)
    if isinstance(methods, str) or not methods or any(m not in _METHODS for m in methods):
        raise ValueError(f"methods must be a non-empty sequence of names from {_METHODS}, got {methods!r}.")
    eps = core.check_number(eps, "eps", high=1.0)
    losses = {m: _training_loss(m, eps, steps, _attack_step(m, eps, None), seed) for m in methods}
    measured: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(core.check_int(rounds, "rounds")):
        for method, loss_fn in losses.items():
            history = core.train(copy.deepcopy(model), data, epochs=1, loss_fn=loss_fn, seed=seed, progress=False)
            measured[method].append(history["seconds"][-1])
    return pd.Series({method: min(times) for method, times in measured.items()}, name="seconds per epoch")


def training_record(model: nn.Module) -> pd.DataFrame:
    """The per-epoch record of a :func:`mnist_model`: cumulative training seconds and network
    passes per training digit (attacks included, monitoring excluded: 1 an epoch for standard
    training, steps + 1 for PGD, 2 for FGSM), the epoch's learning rate, accuracy on the batches
    as trained, and FGSM and PGD-10 accuracy on the 200 held-out training digits;
    ``attrs["best_epoch"]`` is the epoch with the best PGD accuracy (1-based).

    Examples
    --------
    >>> net = nn.Linear(2, 2)
    >>> net.register_buffer("record", torch.tensor([[1.0, 11.0, 1e-3, 0.9, 0.5, 0.4]]))
    >>> net.register_buffer("best_epoch", torch.tensor(0))
    >>> training_record(net).loc[1, "pgd_acc"].item()
    0.4
    """
    if not isinstance(getattr(model, "record", None), torch.Tensor):
        raise ValueError("This model has no training record; it must come from adversarial.mnist_model.")
    table = pd.DataFrame(model.record.cpu().numpy().astype(float), columns=list(_RECORD)).round(6)
    table.index = pd.RangeIndex(1, len(table) + 1, name="epoch")
    table.attrs["best_epoch"] = int(model.best_epoch) + 1
    return table


# --------------------------------------------------------------------------- figures


def _prediction_title(model: nn.Module, image: torch.Tensor, labels: Sequence[str] | None, k: int) -> str:
    top = models.classify(model, image, k=k, labels=list(labels) if labels is not None else None)[0]
    return "\n".join(f"{label[:22]} {p:.0%}" for label, p in top)


def plot_attack(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, labels: Sequence[str] | None = None,
    title: str = "", k: int = 2
) -> Figure:
    """Original, perturbation (magnified, grey = 0) and adversarial image, each of the two
    images titled with the model's top-``k`` classes and confidences. ``x``, ``x_adv``: (C, H, W)."""
    delta = x_adv - x
    scale = delta.abs().max().clamp_min(1e-12)
    panels = [x, 0.5 + 0.5 * delta / scale, x_adv]
    names = ["original\n" + _prediction_title(model, x, labels, k),
             f"perturbation × {0.5 / scale.item():.0f}\n‖δ‖∞ = {delta.abs().max().item() * 255:.1f}/255",
             "adversarial\n" + _prediction_title(model, x_adv, labels, k)]
    return plotting.show_images(panels, names, size=3.0, suptitle=title or None)


def plot_matrix(table: pd.DataFrame, title: str = "", fmt: str = "{:.0%}") -> Figure:
    """A table of fractions as a heat map with the values written in (e.g. a :func:`transfer_matrix`)."""
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * table.shape[1], 0.8 + 0.5 * table.shape[0]))
    ax.imshow(table.to_numpy(dtype=float), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=10)
    ax.set(xticks=range(table.shape[1]), yticks=range(table.shape[0]), title=title)
    ax.set_xticklabels(table.columns, rotation=20, ha="right")
    ax.set_yticklabels(table.index)
    fig.tight_layout()
    return fig


def plot_fooling_rates(epsilons: Sequence[float], rates: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Fooling rate against the budget (in grey levels, ε × 255), one line per attack."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for (name, values), style in zip(rates.items(), itertools.cycle(["o-", "s--", "^:"])):
        ax.plot([e * 255 for e in epsilons], values, style, label=name, markersize=7, alpha=0.85)
    ax.set(xlabel="ε (grey levels: ε × 255)", ylabel="fooling rate", ylim=(-0.03, 1.03), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_records(records: Mapping[str, pd.DataFrame], eps: float = 0.3) -> Figure:
    """Held-out FGSM (left) and PGD-10 (right) accuracy after every epoch, one line per
    :func:`training_record`: the picture of catastrophic overfitting is a gap between the panels."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, column, attack in zip(axes, ["fgsm_acc", "pgd_acc"], ["FGSM", "PGD-10"], strict=True):
        for name, record in records.items():
            ax.plot(record.index, record[column], marker="o", label=name)
        ax.set(xlabel="epoch", title=f"held-out accuracy under {attack}, ε = {eps:g}", ylim=(0, 1))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_gradients(gradients: Mapping[str, torch.Tensor], images: torch.Tensor) -> Figure:
    """One row of input images, then one row of input gradients per model.

    Each gradient (B, 1, H, W) is shown as ``0.5 + g / (2 max|g|)`` per image:
    grey = 0, white = raising the pixel raises the loss.
    """
    rows = [images] + [0.5 + g / (2 * g.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1))
                       for g in gradients.values()]
    ncols = len(images)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.4 * ncols, 1.5 * len(rows)), squeeze=False)
    for r, (row, name) in enumerate(zip(rows, ["image", *gradients], strict=True)):
        for c in range(ncols):
            axes[r, c].imshow(plotting.to_numpy_image(row[c]), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set(xticks=[], yticks=[])
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Try it


def adversarial_widget(model: nn.Module | None = None, photo: str = "chelsea", eps: int = 2,
                       target: str = "none (untargeted)", size: int | None = None) -> ipywidgets.VBox:
    """Try it: attack a course photo on the ImageNet network and watch the prediction change.

    Controls: the photo, ε in grey levels (ε = n/255), the attack (FGSM or
    PGD-10) and an optional target class. The figure shows the original, the
    magnified perturbation and the adversarial image with the top-2 classes.

    Parameters
    ----------
    model : nn.Module, optional
        An ImageNet classifier (default :func:`models.pretrained`).
    photo : str, default="chelsea"
    eps : int, default=2
        Initial budget in grey levels.
    target : str, default="none (untargeted)"
        Initial target class.
    size : int, optional
        Crop side (default ``config.pick(full=224, fast=128)``).
    """
    model = model or models.pretrained()
    size = size or config.pick(full=224, fast=128)
    names = models.imagenet_labels()
    targets = ["none (untargeted)", "bagel", "goldfish", "ostrich", "toaster", "pretzel"]

    def draw(photo: str, eps: int, attack: str, target: str) -> Figure:
        x = photo_crops(size, 1, [photo])[0]
        goal = None if target == targets[0] else names.index(target)
        y = torch.tensor([goal if goal is not None else core.predict(model, x).item()])
        if attack == "FGSM":
            x_adv = fgsm(model, x, y, eps / 255, targeted=goal is not None)
        else:
            x_adv = pgd(model, x, y, eps / 255, steps=10, targeted=goal is not None, seed=0)
        return plot_attack(model, x[0], x_adv[0], title=f"{attack}, ε = {eps}/255, target: {target}")

    return widgets.try_it(
        draw, run_button=True,
        photo=ipywidgets.Dropdown(options=list(assets.PHOTOS), value=photo, description="photo"),
        eps=ipywidgets.IntSlider(value=eps, min=0, max=16, description="ε (×1/255)"),
        attack=ipywidgets.Dropdown(options=["FGSM", "PGD-10"], value="PGD-10", description="attack"),
        target=ipywidgets.Dropdown(options=targets, value=target, description="target"),
    )
