"""Figures shared by all chapters: image grids, before/after panels, curves,
and :func:`show_source`, which puts a tested function's real code on the page.

Chapters hide the cells that call these (``hide-input``) so the page shows the
idea, not the plotting.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["to_numpy_image", "show_images", "before_after", "plot_curves", "show_source"]


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (1, H, W) or (H, W) tensor/array in [0, 1] -> array for ``imshow``.

    Colour images become (H, W, 3); one-channel images (H, W). Values are
    clipped to [0, 1] (nothing is un-normalised: course images are [0, 1]).
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Expected a tensor or array image, got {type(image).__name__}.")
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(
            f"Expected an image of shape (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}."
        )
    return np.clip(image, 0.0, 1.0)


def show_images(
    images: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 2.5,
    cmap: str = "gray",
    suptitle: str | None = None,
) -> Figure:
    """A grid of images with optional titles.

    Parameters
    ----------
    images : sequence of images, or a (B, C, H, W) tensor
        Each image as accepted by :func:`to_numpy_image`.
    titles : sequence of str, optional
        One title per image.
    ncols : int, optional
        Columns of the grid (default: all in one row, at most 8).
    size : float, default=2.5
        Size of one panel in inches.
    cmap : str, default="gray"
        Colour map of one-channel images.
    """
    images = list(images)
    if not images:
        raise ValueError("show_images needs at least one image.")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"Got {len(titles)} titles for {len(images)} images; give one per image.")
    ncols = ncols or min(len(images), 8)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(to_numpy_image(images[i]), cmap=cmap, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def before_after(
    before: torch.Tensor,
    after: torch.Tensor,
    titles: tuple[str, str] = ("before", "after"),
    magnify: float | None = 10.0,
) -> Figure:
    """Two images side by side, and optionally their difference magnified.

    The difference panel shows ``0.5 + magnify * (after - before)``, so grey
    means "unchanged" (as in Szegedy et al.'s adversarial figures).
    """
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape, got {tuple(before.shape)} "
                         f"and {tuple(after.shape)}.")
    panels = [before, after]
    names = list(titles)
    if magnify is not None:
        panels.append(0.5 + magnify * (after - before))
        names.append(f"difference ×{magnify:g}")
    return show_images(panels, names, size=3.0)


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    xlabel: str = "step",
    ylabel: str = "loss",
    x: Sequence[float] | None = None,
    logy: bool = False,
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> Figure:
    """One line per entry of ``curves`` ({label: values}), with a legend."""
    if not curves:
        raise ValueError("plot_curves needs at least one curve.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, values in curves.items():
        ax.plot(x if x is not None else np.arange(len(values)), values, marker="o" if len(values) < 20 else None,
                label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def _without_docstring(source: str) -> str:
    """``source`` of one function or class with its docstring cut out (line numbers from ``ast``)."""
    import ast
    import textwrap

    source = textwrap.dedent(source)
    node = ast.parse(source).body[0]
    first = node.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return source
    lines = source.splitlines(keepends=True)
    return "".join(lines[: first.lineno - 1] + lines[first.end_lineno:])


def show_source(obj: object, docstring: bool = True):
    """Display the source code of a course function or class, highlighted.

    The chapters show the tested function from ``utils`` itself, beside its
    equation, so that the page and the package never drift apart. With
    ``docstring=False`` the docstring is left out, when the page already
    states the equation and the parameters.

    Examples
    --------
    >>> print(show_source(to_numpy_image, docstring=False).data.splitlines()[1].strip())
    if isinstance(image, torch.Tensor):
    """
    from IPython.display import Code

    name = getattr(obj, "__name__", "")
    if name.startswith("_"):
        raise ValueError(f"{name} is private; chapters show only public functions of utils.")
    try:
        source = inspect.getsource(obj)
    except (TypeError, OSError) as err:
        raise TypeError(f"Cannot show the source of {obj!r}: {err}.") from err
    return Code(source if docstring else _without_docstring(source), language="python")
