"""Seconds per iteration of neural style transfer, three ways, in one run.

Usage::

    python benchmarks/style_speed.py --size 256 --steps 10 [--rounds 2]

Compares, with the same layers (content conv4_2; style conv1_1, conv2_1,
conv3_1, conv4_1, conv5_1), image size and optimiser (L-BFGS):

1. ``utils.style.style_transfer`` — VGG-19 truncated after the deepest layer
   used, style and content targets computed once, device from
   ``utils.config.device()``;
2. the approach of the PyTorch neural-style tutorial (A. Jacq, "Neural
   Transfer Using PyTorch", pytorch/tutorials, BSD licence), restated here: a
   copy of VGG-19 ``features`` up to the last loss layer with ContentLoss /
   StyleLoss modules inserted after the chosen conv layers, a normalisation
   module inside, targets computed once when the modules are built, and
   ``torch.optim.LBFGS`` with a closure that clamps the image to [0, 1];
3. a naive loop: the whole of VGG-19 ``features`` (no truncation) read through
   forward hooks, and the style targets recomputed at every iteration.

The unit of cost is one forward and one backward pass through the network
(one evaluation of the loss and its gradient). All three run L-BFGS without
line search, so one iteration is one pass, except that the tutorial's
``optimizer.step`` runs up to 20 iterations per call, so it may do a few more
passes than asked; the table counts passes. It gives the set-up time (copying the network, computing the
targets) and the mean seconds per pass of the optimisation loop. Runs offline with the
random-weight fallback: the cost of a pass does not depend on the weights.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from utils import assets, config, models, style

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


# ----------------------------------------------------------------- the tutorial's approach
class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(x, self.target)
        return x


def tutorial_gram(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor):
        super().__init__()
        self.target = tutorial_gram(target_feature).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(tutorial_gram(x), self.target)
        return x


def tutorial_model(cnn, normalization, style_img, content_img):
    """The tutorial's get_style_model_and_losses, with Gatys's conv names."""
    content_losses, style_losses = [], []
    model = nn.Sequential(normalization)
    names = iter(style.VGG_LAYERS)
    for layer in cnn.children():
        name = next(names)
        if isinstance(layer, nn.ReLU):
            layer = nn.ReLU(inplace=False)
        model.add_module(name, layer)
        if name == CONTENT_LAYER:
            loss = ContentLoss(model(content_img).detach())
            model.add_module(f"content_loss_{name}", loss)
            content_losses.append(loss)
        if name in STYLE_LAYERS:
            loss = StyleLoss(model(style_img).detach())
            model.add_module(f"style_loss_{name}", loss)
            style_losses.append(loss)
    last = max(i for i, m in enumerate(model) if isinstance(m, (ContentLoss, StyleLoss)))
    return model[: last + 1], style_losses, content_losses


def run_tutorial(cnn, normalization, content_img, style_img, steps):
    tic = time.perf_counter()
    model, style_losses, content_losses = tutorial_model(cnn, normalization, style_img, content_img)
    input_img = content_img.clone().requires_grad_(True)
    model.eval().requires_grad_(False)
    optimizer = torch.optim.LBFGS([input_img])
    setup = time.perf_counter() - tic
    run = [0]
    tic = time.perf_counter()
    while run[0] < steps:

        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            loss = 1e6 * sum(sl.loss for sl in style_losses) + sum(cl.loss for cl in content_losses)
            loss.backward()
            run[0] += 1
            return loss

        optimizer.step(closure)
    return setup, (time.perf_counter() - tic) / run[0], run[0]


# ----------------------------------------------------------------- the course
def run_course(content_img, style_img, steps):
    tic = time.perf_counter()
    net = style.VGGFeatures([CONTENT_LAYER, *STYLE_LAYERS])
    _, history = style.style_transfer(content_img, style_img, content_layer=CONTENT_LAYER,
                                      style_layers=STYLE_LAYERS, steps=steps, net=net)
    loop, passes = history["time"][-1], history["evaluations"][-1]
    return time.perf_counter() - tic - loop, loop / passes, passes  # set-up includes the targets


# ----------------------------------------------------------------- naive: no truncation, targets every step
def run_naive(vgg, content_img, style_img, steps):
    tic = time.perf_counter()
    modules = dict(vgg.named_modules())
    feats: dict[str, torch.Tensor] = {}
    wanted = [CONTENT_LAYER, *STYLE_LAYERS]
    hooks = [modules[f"net.features.{style.VGG_LAYERS[n]}"].register_forward_hook(
        lambda _m, _i, out, n=n: feats.__setitem__(n, out.clone())) for n in wanted]
    with torch.no_grad():
        vgg.net.features(vgg.normalize(content_img))
        content_target = feats[CONTENT_LAYER]
    image = content_img.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image], max_iter=1)
    setup = time.perf_counter() - tic

    def closure():
        optimizer.zero_grad()
        with torch.no_grad():  # the style targets, recomputed every time
            vgg.net.features(vgg.normalize(style_img))
            targets = {n: style.gram_matrix(feats[n]) for n in STYLE_LAYERS}
        vgg.net.features(vgg.normalize(image))  # all 37 layers
        loss = style.content_loss(feats[CONTENT_LAYER], content_target)
        for n in STYLE_LAYERS:
            _, c, h, w = feats[n].shape
            loss = loss + 1e3 * style.style_layer_loss(style.gram_matrix(feats[n]), targets[n], c, h * w)
        loss.backward()
        return loss

    tic = time.perf_counter()
    try:
        for _ in range(steps):
            optimizer.step(closure)
    finally:
        for hook in hooks:
            hook.remove()
    return setup, (time.perf_counter() - tic) / steps, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="shorter image side in pixels")
    parser.add_argument("--steps", type=int, default=10, help="L-BFGS iterations per method")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (best one is kept)")
    args = parser.parse_args()
    device = config.device()
    content_img = assets.load_image("tubingen", size=args.size)[None].to(device)
    style_img = assets.load_image("starry_night", size=args.size)[None].to(device)
    # the tutorial's loss modules see the style image too, so it must have the content's size
    style_img = F.interpolate(style_img, size=content_img.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1)
    vgg = models.pretrained("vgg19")
    vgg.requires_grad_(False)
    style._vgg19_parts()  # build VGG-19 once for every method, outside the timings
    cnn = copy.deepcopy(vgg.net.features)
    methods = {
        "course `style.style_transfer` (truncated, targets once)":
            lambda: run_course(content_img, style_img, args.steps),
        "PyTorch tutorial approach (loss modules, clamp in closure)":
            lambda: run_tutorial(copy.deepcopy(cnn), copy.deepcopy(vgg.normalize), content_img, style_img, args.steps),
        "naive (full VGG-19 features, targets every step)":
            lambda: run_naive(vgg, content_img, style_img, args.steps),
    }
    # Interleave the methods over several rounds and keep each one's fastest round, so that
    # a load change on a shared machine does not favour whichever method ran at a quiet moment.
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            results[name].append(run())
    best = {name: min(runs, key=lambda r: r[1]) for name, runs in results.items()}
    base = next(iter(best.values()))[1]
    print(f"\nStyle transfer, content and style {tuple(content_img.shape[-2:])}, L-BFGS, {args.steps} iterations, "
          f"best of {args.rounds} interleaved rounds; device {device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}\n")
    print("| method | set-up (s) | forward+backward passes | s / pass | relative |")
    print("|---|---:|---:|---:|---:|")
    for name, (setup, per_iter, iters) in best.items():
        print(f"| {name} | {setup:.2f} | {iters} | {per_iter:.3f} | {per_iter / base:.2f}× |")


if __name__ == "__main__":
    main()
