"""Neural style speed, in one run: the course's implementation against the PyTorch tutorial's approach.

Usage::

    python benchmarks/style_speed.py [--tutorial-steps 300] [--repeats 3] [--chapter]

1. **The tutorial's settings** (A. Jacq, "Neural Transfer Using PyTorch",
   pytorch/tutorials, BSD licence): VGG-19 ``features``, content at
   ``conv_4`` (Gatys's ``conv2_2``), style at ``conv_1`` … ``conv_5``
   (``conv1_1``, ``conv1_2``, ``conv2_1``, ``conv2_2``, ``conv3_1``), the
   tutorial's Gram matrix ``F Fᵀ / (C·H·W)`` and mean-squared losses, style
   weight 1e6, content weight 1, 128 × 128 pixels on the CPU, starting from the
   content image. Two implementations minimise this same objective:

   * the tutorial's approach, restated here: loss modules inserted after the
     chosen convolutions in a copy of VGG-19 cut after the last of them,
     ``torch.optim.LBFGS`` (20 iterations per ``step``) with a closure that
     clamps the image to [0, 1], ``--tutorial-steps`` evaluations (300 in the
     tutorial); its final loss is the target;
   * the course's ``style.style_transfer`` on ``style.style_net(vgg)`` with the
     tutorial's layers, its relative losses re-weighted so that the objective
     at 128 px is the tutorial's (``layer_weights``, ``content_weight``),
     projected L-BFGS with the pixels bounded to [0, 1]; once coarse to fine (64 px,
     then 128 px), once at 128 px only, to separate the two gains.

   Both use the same VGG-19 weights: ImageNet when torchvision can have them,
   the same seeded random ones otherwise (the cost of a pass does not depend
   on the weights). Reported: seconds per forward + backward pass, and the
   wall time until the loss at 128 px first reaches the tutorial's final loss;
   the three runs alternate for ``--repeats`` rounds and each side's median
   round is reported, so that a machine whose speed drifts favours no side.

2. **The chapter's settings** (``--chapter``): one style transfer of the
   Tübingen photo in the style of Starry Night with the course's default
   network (EfficientNet-Lite0) at 256 px, coarse to fine with the chapter's
   steps; seconds per pass at each stage and in all.
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

SIDE = 128
CONTENT_LAYER = "conv2_2"                                          # the tutorial's conv_4
STYLE_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1")  # conv_1 ... conv_5
STYLE_WEIGHT, CONTENT_WEIGHT = 1e6, 1.0


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


def tutorial_model(cnn: nn.Sequential, normalization: nn.Module, style_img: torch.Tensor,
                   content_img: torch.Tensor) -> tuple[nn.Sequential, list[StyleLoss], list[ContentLoss]]:
    """The tutorial's get_style_model_and_losses, with Gatys's names for its conv_i."""
    content_losses, style_losses = [], []
    model = nn.Sequential(normalization)
    for name, layer in zip(style.VGG_LAYERS, cnn.children(), strict=False):
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


def tutorial_objective(model: nn.Sequential, style_losses, content_losses, image: torch.Tensor) -> torch.Tensor:
    model(image)
    return STYLE_WEIGHT * sum(sl.loss for sl in style_losses) + CONTENT_WEIGHT * sum(cl.loss for cl in content_losses)


def run_tutorial(vgg: nn.Module, content_img: torch.Tensor, style_img: torch.Tensor, steps: int) -> dict:
    tic = time.perf_counter()
    model, style_losses, content_losses = tutorial_model(copy.deepcopy(vgg.net.features),
                                                         copy.deepcopy(vgg.normalize), style_img, content_img)
    model.eval().requires_grad_(False)
    input_img = content_img.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([input_img])
    run = [0]
    while run[0] <= steps:

        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            loss = tutorial_objective(model, style_losses, content_losses, input_img)
            loss.backward()
            run[0] += 1
            return loss

        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
        final = tutorial_objective(model, style_losses, content_losses, input_img).item()
    seconds = time.perf_counter() - tic
    return {"seconds": seconds, "passes": run[0], "loss": final, "image": input_img.detach()}


# ----------------------------------------------------------------- the course, at the tutorial's settings
def course_weights(net: style.StyleNet, content_img: torch.Tensor,
                   style_img: torch.Tensor) -> tuple[list[float], float]:
    """Weights that turn the course's relative losses into the tutorial's objective at 128 px.

    Tutorial, per style layer: mean((F Fᵀ/(CHW) - A)²) = ‖G - A‖² / C⁴ with the course's G = F Fᵀ/(HW);
    the course's E_l divides by ‖A‖², so w_l = 1e6 ‖A‖² / C⁴. Content: mean((F - P)²) = ‖F - P‖² / (CHW),
    the course divides by ‖P‖², so α = ‖P‖² / (CHW).
    """
    with torch.no_grad():
        grams, _ = net.grams(style_img)
        _, content = net.grams(content_img, content=True)
    weights = [STYLE_WEIGHT * (grams[layer] ** 2).sum().item() / grams[layer].shape[-1] ** 4
               for layer in net.style_layers]
    return weights, (content**2).sum().item() / content.numel()


def run_course(vgg: nn.Module, content_img: torch.Tensor, style_img: torch.Tensor, target_loss: float,
               steps: tuple[int, int]) -> dict:
    tic = time.perf_counter()
    net = style.style_net(vgg, style_layers=STYLE_LAYERS, content_layer=CONTENT_LAYER)
    weights, alpha = course_weights(net, content_img, style_img)
    result = style.style_transfer(content_img, style_img, net, size=SIDE, steps=steps, style_weight=1.0,
                                  content_weight=alpha, layer_weights=weights, progress=False)
    seconds = time.perf_counter() - tic
    h = result.history
    fine = [i for i, size in enumerate(h["size"]) if size == SIDE]
    reached = next((i for i in fine if h["loss"][i] <= target_loss), None)
    fine_passes = h["evaluations"][fine[-1]] - h["evaluations"][fine[0]]
    return {"seconds": seconds, "passes": h["evaluations"][-1], "loss": h["loss"][-1], "image": result.image,
            "per_pass": (h["time"][fine[-1]] - h["time"][fine[0]]) / fine_passes,
            "reached": None if reached is None else h["time"][reached],
            "passes_reached": None if reached is None else h["evaluations"][reached]}


# ----------------------------------------------------------------- the chapter's settings
def run_chapter() -> None:
    content = assets.load_image("tubingen", size=256)
    painting = assets.load_image("starry_night", size=256)
    steps = (60, 25, 10)
    net = style.style_net()
    tic = time.perf_counter()
    h = style.style_transfer(content, painting, net, size=256, steps=steps, progress=False).history
    total = time.perf_counter() - tic
    print(f"\nChapter settings: EfficientNet-Lite0, Tübingen 256×341 in the style of Starry Night, steps {steps}, "
          f"{h['evaluations'][-1]} passes in {total:.1f} s\n")
    print("| stage (shorter side) | passes | s / pass |")
    print("|---:|---:|---:|")
    for size in sorted(set(h["size"])):
        rows = [i for i, s in enumerate(h["size"]) if s == size]
        passes = h["evaluations"][rows[-1]] - h["evaluations"][rows[0]]
        print(f"| {size} px | {passes} | {(h['time'][rows[-1]] - h['time'][rows[0]]) / max(passes, 1):.3f} |")


def median_run(runs: list[dict]) -> dict:
    """The run whose time per pass is the median of the rounds'."""
    def per_pass(run: dict) -> float:
        return run.get("per_pass") or run["seconds"] / run["passes"]
    return sorted(runs, key=per_pass)[len(runs) // 2]


def square(image: torch.Tensor) -> torch.Tensor:
    """The centre square of an image, at SIDE × SIDE (the tutorial's images are square, of one size)."""
    side = min(image.shape[-2:])
    top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
    return assets.resize(image[..., top:top + side, left:left + side], (SIDE, SIDE))[None].to(config.device())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tutorial-steps", type=int, default=300, help="the tutorial's num_steps")
    parser.add_argument("--course-steps", type=int, nargs=2, default=(100, 200),
                        help="the course's iterations at 64 and 128 px (it runs all; the time to reach is read off)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all three runs; the median is reported")
    parser.add_argument("--chapter", action="store_true", help="also time the chapter's settings")
    args = parser.parse_args()
    vgg = models.optional_pretrained("vgg19")
    weights = "ImageNet" if vgg is not None else "seeded random (offline)"
    vgg = (vgg or models.untrained("vgg19", seed=0)).requires_grad_(False)
    content_img = square(assets.load_image("tubingen"))
    style_img = square(assets.load_image("starry_night"))
    names = ("course `style.style_transfer`, 64 → 128 px (coarse to fine)",
             "course `style.style_transfer`, 128 px only")
    rounds: list[dict[str, dict]] = []
    for _ in range(args.repeats):  # alternated, so that a machine that speeds up or slows down favours no side
        tutorial = run_tutorial(vgg, content_img, style_img, args.tutorial_steps)
        rounds.append({"tutorial": tutorial,
                       names[0]: run_course(vgg, content_img, style_img, tutorial["loss"], tuple(args.course_steps)),
                       names[1]: run_course(vgg, content_img, style_img, tutorial["loss"], (sum(args.course_steps),))})
    tutorial = median_run([r["tutorial"] for r in rounds])
    courses = {name: median_run([r[name] for r in rounds]) for name in names}
    # the course's objective is the tutorial's: check it on the course's final image
    model, style_losses, content_losses = tutorial_model(copy.deepcopy(vgg.net.features), vgg.normalize,
                                                         style_img, content_img)
    first = next(iter(courses.values()))
    with torch.no_grad():
        check = tutorial_objective(model, style_losses, content_losses, first["image"]).item()
    print(f"\nThe tutorial's settings: VGG-19 ({weights} weights), content conv2_2 (conv_4), style conv1_1 … conv3_1 "
          f"(conv_1 … conv_5), style weight 1e6, {SIDE}×{SIDE} px; device {config.device()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"Tutorial's final loss after {tutorial['passes']} passes: {tutorial['loss']:.4g}; the course's final "
          f"loss {first['loss']:.4g} (the tutorial's loss function on the course's image: {check:.4g})\n")
    print(f"| implementation | passes | s / pass at {SIDE} px | time to the tutorial's final loss | relative |")
    print("|---|---:|---:|---:|---:|")
    base = tutorial["seconds"] / tutorial["passes"]
    print(f"| tutorial's approach (torch L-BFGS, clamp in the closure) | {tutorial['passes']} | "
          f"{base:.4f} (1.00×) | {tutorial['seconds']:.1f} s | 1.00× |")
    for name, course in courses.items():
        reached = course["reached"]
        reached_text = "not reached" if reached is None else f"{reached:.1f} s ({course['passes_reached']} passes)"
        ratio = "–" if reached is None else f"{reached / tutorial['seconds']:.2f}×"
        print(f"| {name} | {course['passes']} | {course['per_pass']:.4f} ({course['per_pass'] / base:.2f}×) | "
              f"{reached_text} | {ratio} |")
    print("\nThe tutorial's time per pass includes its set-up (building the loss modules, computing the targets); "
          "the course's counts its 128-px passes only; times to the loss include everything.")
    if args.chapter:
        run_chapter()


if __name__ == "__main__":
    main()
