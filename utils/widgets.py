"""Interactive "Try it" front-ends: one pattern for every chapter.

A chapter's widget is a *draw function* ``draw(**values) -> Figure`` plus
ipywidgets controls, one per argument. :func:`try_it` first shows the static
figure for the controls' initial values — this is what the published HTML
page shows, since no Python runs there — and then the live controls, which
redraw into their own output area when used on Colab, Binder or a laptop.

Example
-------
>>> import ipywidgets as w
>>> def draw(freq):
...     fig, ax = plt.subplots(); ax.plot(np.sin(freq * np.linspace(0, 6, 200))); return fig
>>> panel = try_it(draw, freq=w.FloatSlider(value=1.0, min=0.5, max=5.0))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure

__all__ = ["try_it", "live_figure"]


def _values(controls: dict[str, widgets.ValueWidget]) -> dict[str, object]:
    return {name: control.value for name, control in controls.items()}


def live_figure(
    draw: Callable[..., Figure],
    run_button: bool = False,
    **controls: widgets.ValueWidget,
) -> widgets.VBox:
    """Controls above an output area in which ``draw(**values)`` is redrawn.

    Parameters
    ----------
    draw : callable
        Takes one keyword argument per control and returns a matplotlib Figure.
    run_button : bool, default=False
        Redraw only when a "Run" button is pressed (for slow draws such as a
        style-transfer optimisation) instead of on every change.
    **controls : ipywidgets value widgets
        One per argument of ``draw``, e.g. ``eps=FloatSlider(...)``.
    """
    if not callable(draw):
        raise TypeError(f"draw must be a function returning a Figure, got {type(draw).__name__}.")
    if not controls:
        raise ValueError("live_figure needs at least one control, e.g. eps=FloatSlider(...).")
    for name, control in controls.items():
        if not isinstance(control, widgets.ValueWidget):
            raise TypeError(f"Control {name!r} must be an ipywidgets value widget, "
                            f"got {type(control).__name__}.")
    out = widgets.Output()
    hint = "Press Run to draw." if run_button else "Move a control to redraw."

    def redraw(_=None) -> None:
        with out:
            out.clear_output(wait=True)
            fig = draw(**_values(controls))
            plt.show()
            plt.close(fig)

    boxes: list[widgets.Widget] = list(controls.values())
    if run_button:
        button = widgets.Button(description="Run", button_style="primary", icon="play")
        button.on_click(redraw)
        boxes.append(button)
    else:
        for control in controls.values():
            control.observe(redraw, names="value")
    panel = widgets.VBox([widgets.HBox(boxes, layout=widgets.Layout(flex_flow="row wrap")),
                          widgets.HTML(f"<i>{hint}</i>"), out])
    return panel.add_class("try-it")  # lets the site's tests find every "Try it" panel


def try_it(
    draw: Callable[..., Figure],
    run_button: bool = False,
    **controls: widgets.ValueWidget,
) -> widgets.VBox:
    """Show the static figure for the controls' initial values, then the live widget.

    The static figure keeps the published page complete without a kernel; the
    returned widget (displayed as the cell's result) is for live use.
    """
    fig = draw(**_values(controls))
    display(fig)
    plt.close(fig)
    return live_figure(draw, run_button=run_button, **controls)


# --------------------------------------------------------------------------- chapter 0


def image_browser_widget(name: str = "chelsea", size: int = 128) -> widgets.VBox:
    """Browse the course images: pick a name and a size, see the image and its credit."""
    from . import assets, plotting

    infos = {info["name"]: info for info in assets.list_images()}

    def draw(name: str, size: int) -> Figure:
        image = assets.load_image(name, size=size)
        fig = plotting.show_images([image], [f"{name}: {tuple(image.shape)}"], size=4.0)
        fig.text(0.5, 0.01, infos[name]["credit"], ha="center", fontsize=8)
        return fig

    return try_it(
        draw,
        name=widgets.Dropdown(options=sorted(infos), value=name, description="image"),
        size=widgets.IntSlider(value=size, min=32, max=512, step=32, description="size"),
    )


# ------------------------------------------------------------------- chapter 2
def _draw_rips_complex(ax: plt.Axes, X, eps: float) -> None:
    """Balls of radius ε/2, Rips edges and triangles at scale ε, over the plane points X."""
    import itertools

    import numpy as np
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Circle, Polygon
    from scipy.spatial.distance import cdist

    close = cdist(X, X) <= eps
    pairs = [e for e in itertools.combinations(range(len(X)), 2) if close[e]]
    triangles = [t for t in itertools.combinations(range(len(X)), 3)
                 if close[t[0], t[1]] and close[t[0], t[2]] and close[t[1], t[2]]]
    balls = PatchCollection([Circle(p, eps / 2) for p in X], color="C0", alpha=0.12, lw=0)
    faces = PatchCollection([Polygon(X[list(t)]) for t in triangles], color="C1", alpha=0.15, lw=0)
    ax.add_collection(balls)
    ax.add_collection(faces)
    ax.add_collection(LineCollection([X[list(e)] for e in pairs], color="k", lw=0.7))
    ax.plot(*np.asarray(X).T, "k.", ms=5)
    ax.set_aspect("equal")
    ax.set_title(f"Rips complex at ε = {eps:.2f}: {len(pairs)} edges, {len(triangles)} triangles",
                 fontsize=9)
    ax.autoscale_view()


def topology_widget(X=None, eps: float | None = None, maxdim: int = 1) -> widgets.VBox:
    """ε slider over plane points: ε/2-balls, Rips edges and triangles, barcode, Betti numbers.

    Two balls of radius ε/2 meet exactly when their centres are within ε, the
    scale at which ripser adds the edge; so the picture on the left is the union
    of balls and the Rips complex at the same ε as the dashed line on the right.

    Parameters
    ----------
    X : (n, 2) array, optional
        Points (default: 30 noisy samples of the unit circle).
    eps : float, optional
        Initial scale (default: a quarter into the longest H1 bar, else 0.5).
    maxdim : int, default=1
        Highest homology dimension of the barcode.
    """
    import numpy as np

    from . import plotting, topology

    X = topology.sample_circle(30, noise=0.08, seed=0) if X is None else np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"topology_widget draws plane point clouds: X must have shape (n, 2), "
                         f"got {X.shape}.")
    diagrams = topology.persistence(X, maxdim=maxdim)
    top = 1.2 * max(float(d[np.isfinite(d[:, 1]), 1].max(initial=0.0)) for d in diagrams)
    if eps is None:
        h1 = diagrams[1] if maxdim >= 1 and len(diagrams[1]) else np.array([[0.5, 0.5]])
        birth, death = h1[np.argmax(h1[:, 1] - h1[:, 0])]
        eps = float(birth + 0.25 * (death - birth))       # early in the longest loop's life

    def draw(eps: float):
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2),
                                          gridspec_kw={"width_ratios": [1, 1.3]})
        _draw_rips_complex(left, X, eps)
        betti = topology.betti_numbers(diagrams, eps)
        names = ", ".join(f"β{j} = {b}" for j, b in enumerate(betti))
        plotting.plot_barcode(diagrams, eps=eps, ax=right, title=f"Betti numbers at ε: {names}")
        fig.tight_layout()
        return fig

    slider = widgets.FloatSlider(value=round(eps, 2), min=0.0, max=round(max(top, eps), 2),
                                 step=0.01, description="ε", continuous_update=False)
    return try_it(draw, eps=slider)


# ----------------------------------------------------------------------------- chapter 1: locality
def xor_playground_widget(hidden: int = 4, lr: float = 2.0, epochs: int = 2000,
                          activation: str = "sigmoid", seed: int = 0) -> widgets.VBox:
    """XOR playground: train a [2, hidden, 1] MLP by back-propagation and redraw its boundary.

    Controls: hidden units, learning rate, epochs, hidden activation and seed.
    The figure shows the output ŷ over the input plane with its ½ contour (the
    decision boundary) beside the loss curve. Training takes up to about a
    second, so the panel redraws when "Run" is pressed.
    """
    from . import locality

    def draw(hidden: int, lr: float, epochs: int, activation: str, seed: int) -> Figure:
        X, y = locality.xor_dataset()
        net = locality.MLP([2, hidden, 1], activation=activation, seed=seed)
        losses = net.fit(X, y, lr=lr, epochs=epochs)
        accuracy = (net.predict(X) == y).mean()
        fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.5))
        locality.plot_decision_boundary(lambda P: net.forward(P)[:, 0], X, y, ax=left,
                                        title=f"{hidden} {activation} units: {accuracy:.0%} right")
        right.plot(losses)
        right.set(xlabel="epoch", ylabel="loss E = ½Σ(ŷ − y)²", yscale="log",
                  title=f"learning rate {lr:g}")
        right.grid(alpha=0.3)
        fig.tight_layout()
        return fig

    return try_it(
        draw, run_button=True,
        hidden=widgets.IntSlider(value=hidden, min=1, max=8, description="hidden units"),
        lr=widgets.FloatLogSlider(value=lr, base=10, min=-2, max=1, step=0.1,
                                  description="learning rate"),
        epochs=widgets.IntSlider(value=epochs, min=100, max=5000, step=100, description="epochs"),
        activation=widgets.Dropdown(value=activation, options=["sigmoid", "tanh", "relu"],
                                    description="activation"),
        seed=widgets.IntSlider(value=seed, min=0, max=9, description="seed"),
    )


# --------------------------------------------------------------------------- Chapter 4: visualization


def saliency_widget(model, images, class_names=None, layers=None) -> widgets.VBox:
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
    import torch
    from torch import nn

    from . import visualize

    with torch.no_grad():
        num_classes = model(images[:1]).shape[1]
    class_names = class_names or [str(c) for c in range(num_classes)]
    layers = layers if layers is not None else visualize.layer_names(model, nn.ReLU)

    def draw(image: int, target_class: int, layer: str):
        x = images[image : image + 1]
        if layer == "class score":
            target, what = target_class, f"class {class_names[target_class]}"
        else:
            activation = visualize.layer_features(model, x, layer)[0]
            channel = int(activation.reshape(len(activation), -1).sum(1).argmax())
            target, what = (layer, channel), f"{layer}, channel {channel}"
        maps = [visualize.saliency(model, x, target), visualize.guided_backprop(model, x, target)]
        with torch.no_grad():
            predicted = class_names[int(model(x).argmax())]
        fig = visualize.show_maps(x, maps, ["image", "saliency", "guided backprop"],
                                  titles=[f"predicted: {predicted}"], size=2.6)
        fig.suptitle(f"target: {what}", fontsize=10)
        fig.tight_layout()
        return fig

    return try_it(
        draw,
        image=widgets.Dropdown(options=[(f"image {i}", i) for i in range(len(images))], value=0,
                               description="image"),
        target_class=widgets.Dropdown(options=[(name, c) for c, name in enumerate(class_names)], value=0,
                                      description="class"),
        layer=widgets.Dropdown(options=["class score", *layers], value="class score", description="layer"),
    )


def class_model_widget(model, class_names=None, size=None, steps: int = 60) -> widgets.VBox:
    """Class models by gradient ascent with sliders for the L2 weight, the blur and the clipping.

    Press Run to optimise (a few seconds): ``visualize.class_visualization``
    with the chosen class, λ, blur σ (0 switches blurring off) and clipping
    percentile.
    """
    import torch
    from torch import nn

    from . import plotting, visualize

    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    size = size or (28 if channels == 1 else 128)
    with torch.no_grad():
        num_classes = model(torch.zeros(1, channels, size, size)).shape[1]
    class_names = class_names or [str(c) for c in range(num_classes)]

    def draw(target_class: int, l2: float, blur_sigma: float, clip_percentile: float):
        image = visualize.class_visualization(
            model, target_class, size=size, steps=steps, l2=l2, blur_every=4 if blur_sigma > 0 else 0,
            blur_sigma=max(blur_sigma, 1e-3), clip_percentile=clip_percentile, jitter=1, progress=False)
        with torch.no_grad():
            score = model(image[None])[0, target_class].item()
        return plotting.show_images([image], [f"class {class_names[target_class]}: score {score:.1f}"],
                                    size=3.2)

    return try_it(
        draw,
        run_button=True,
        target_class=widgets.Dropdown(options=[(name, c) for c, name in enumerate(class_names)], value=0,
                                      description="class"),
        l2=widgets.FloatLogSlider(value=1e-3, base=10, min=-4, max=1, step=0.5, description="λ (L2)"),
        blur_sigma=widgets.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.1, description="blur σ"),
        clip_percentile=widgets.FloatSlider(value=0.0, min=0.0, max=50.0, step=5.0, description="clip %"),
    )


def adversarial_widget(model, image, label: int, labels=None, eps: float = 0.1, eps_max: float = 0.3,
                       steps: int = 10) -> widgets.VBox:
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
    import torch

    from . import adversarial

    y = torch.tensor([int(label)])

    def draw(eps: float, attack: str):
        x = image.unsqueeze(0)
        if attack == "FGSM":
            x_adv = adversarial.fgsm(model, x, y, eps)
        else:
            x_adv = adversarial.pgd(model, x, y, eps, alpha=2.5 * eps / steps, steps=steps, seed=0)
        return adversarial.plot_attack(model, image, x_adv[0], labels, title=f"{attack}, ε = {eps:.3f}")

    return try_it(
        draw,
        eps=widgets.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_max / 60, readout_format=".3f",
                                description="ε", continuous_update=False),
        attack=widgets.Dropdown(options=["FGSM", "PGD"], value="FGSM", description="attack"),
    )


def transfer_widget(n_per_class: int = 20, strategy: str = "fine-tune last 2 blocks",
                    target: str = "digits 5-9 (similar)", epochs: int | None = None) -> widgets.VBox:
    """Chapter 3: pick a target-set size and a strategy, see the learning curve.

    The source is the course's MNIST CNN trained on digits 0-4; the target is
    digits 5-9 (similar) or texture crops (different). Each run copies the
    source, replaces its head and trains with :func:`utils.transfer.fine_tune`,
    recording the test accuracy after every epoch.
    """
    import copy

    from . import config, models, transfer

    source = models.mnist_cnn(digits=(0, 1, 2, 3, 4))
    tasks = {
        "digits 5-9 (similar)": transfer.digit_task((5, 6, 7, 8, 9)),
        "textures (different)": transfer.crop_task(("brick", "grass", "gravel"), n_train=200, n_test=100),
    }
    plans = {"fine-tune head": ("head", False), "fine-tune last 2 blocks": (2, False),
             "fine-tune all": ("all", False), "from scratch": ("all", True)}
    epochs = epochs or config.pick(full=15, fast=4)

    def draw(n_per_class: int, strategy: str, target: str) -> Figure:
        train, test = tasks[target]
        small = transfer.subsample_per_class(train, n_per_class)
        test = transfer.subsample_per_class(test, 60)
        trainable, scratch = plans[strategy]
        model = copy.deepcopy(source)
        if scratch:
            transfer.reinitialise(model)
        transfer.replace_head(model, int(train.tensors[1].max()) + 1)
        history = transfer.fine_tune(model, small, test, trainable, epochs=epochs, progress=False)
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

    return try_it(
        draw, run_button=True,
        n_per_class=widgets.SelectionSlider(options=[5, 10, 20, 50, 100, 200], value=n_per_class,
                                            description="examples/class"),
        strategy=widgets.Dropdown(options=list(plans), value=strategy, description="strategy"),
        target=widgets.Dropdown(options=list(tasks), value=target, description="target"),
    )


def style_widget(content: str = "tubingen", style: str = "starry_night", ratio: float = 1.0,
                 layers: str = "all five blocks", size: int | None = None,
                 steps: int | None = None) -> widgets.VBox:
    """Try it: style transfer with a chosen content, style, style/content ratio and style layers.

    Each press of "Run" optimises ``steps`` L-BFGS steps at ``size`` pixels (defaults from
    ``config.pick``) from the content image, with the style weight calibrated so that
    ``ratio`` = 1 balances the two terms (:func:`utils.style.calibrated_style_weight`).
    """
    from . import assets, config, plotting
    from . import style as neural_style

    size = size or config.pick(full=128, fast=48)
    steps = steps or config.pick(full=25, fast=5)
    layer_sets = {"block 1 only": ("relu1_1",), "blocks 1-2": ("relu1_1", "relu2_1"),
                  "blocks 1-3": ("relu1_1", "relu2_1", "relu3_1"), "all five blocks": neural_style.STYLE_LAYERS}
    if layers not in layer_sets:
        raise ValueError(f"layers must be one of {list(layer_sets)}, got {layers!r}.")

    def draw(content: str, style: str, ratio: float, layers: str) -> Figure:
        c, s = assets.load_image(content, size=size), assets.load_image(style, size=size)
        beta = neural_style.calibrated_style_weight(c, s, ratio, style_layers=layer_sets[layers])
        image, _ = neural_style.style_transfer(c, s, style_layers=layer_sets[layers], style_weight=beta,
                                               steps=steps)
        titles = [f"content: {content}", f"style: {style}", f"ratio {ratio:g}, {layers}, {steps} steps"]
        return plotting.show_images([c, s, image[0]], titles, size=3.2)

    return try_it(
        draw,
        run_button=True,
        content=widgets.Dropdown(options=["tubingen", "chelsea", "astronaut", "coffee"], value=content,
                                 description="content"),
        style=widgets.Dropdown(options=["starry_night", "shipwreck", "the_scream", "woman_with_hat"],
                               value=style, description="style"),
        ratio=widgets.FloatLogSlider(value=ratio, base=10, min=-2, max=2, step=0.5, description="style/content"),
        layers=widgets.Dropdown(options=list(layer_sets), value=layers, description="style layers"),
    )
