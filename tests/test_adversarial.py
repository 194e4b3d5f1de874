"""Tests of utils.adversarial against torchattacks, closed forms, brute force and finite differences."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torchattacks
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from utils import adversarial as adv
from utils import assets, core, models

TOL = 1e-6  # float32 rounding of x + eps


@pytest.fixture(scope="module")
def small_model() -> models.MnistCNN:
    """An untrained, seeded MNIST CNN: enough for exactness tests, instant to build."""
    torch.manual_seed(0)
    return models.MnistCNN().eval()


@pytest.fixture(scope="module")
def trained() -> models.MnistCNN:
    return models.mnist_cnn()


@pytest.fixture(scope="module")
def other() -> models.MnistCNN:
    """A second, independently trained CNN of another width: a source of transfer attacks."""
    return models.mnist_cnn(seed=1, width=8)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = assets.mnist(train=False, n=120).tensors
    return x, y


def _batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _assert_valid(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> None:
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    distance = (x_adv - x).flatten(1).abs().amax(1) if norm == "linf" else (x_adv - x).flatten(1).norm(dim=1)
    assert distance.max() <= eps + 1e-5


def _linear(d: int, k: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).eval()


# --------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("eps", [0.0, 0.03, 0.3, 1.0])
@pytest.mark.parametrize("targeted", [False, True])
def test_attacks_stay_in_box_and_ball(small_model, eps, targeted):
    x, y = _batch()
    _assert_valid(adv.fgsm(small_model, x, y, eps, targeted=targeted), x, eps)
    _assert_valid(adv.pgd(small_model, x, y, eps, steps=5, targeted=targeted, restarts=2, seed=0), x, eps)
    _assert_valid(adv.pgd(small_model, x, y, 3 * eps, steps=5, targeted=targeted, norm="l2", seed=0), x, 3 * eps,
                  "l2")


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_torchattacks(small_model, targeted):
    x, y = _batch(16)
    reference = torchattacks.FGSM(small_model, eps=0.1)
    if targeted:
        reference.set_mode_targeted_by_function(lambda images, labels: labels)  # y = targets
    expected = reference(x, y)
    torch.testing.assert_close(adv.fgsm(small_model, x, y, 0.1, targeted=targeted), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_matches_torchattacks(small_model, targeted, random_start):
    x, y = _batch(16)
    reference = torchattacks.PGD(small_model, eps=0.1, alpha=0.02, steps=7, random_start=random_start)
    if targeted:
        reference.set_mode_targeted_by_function(lambda images, labels: labels)  # y = targets
    torch.manual_seed(7)  # torchattacks draws its start from the global generator; pgd from its own, seeded alike
    expected = reference(x, y)
    result = adv.pgd(small_model, x, y, 0.1, 0.02, 7, random_start=random_start, targeted=targeted, seed=7)
    torch.testing.assert_close(result, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("random_start", [False, True])
def test_l2_pgd_matches_torchattacks(small_model, random_start):
    x, y = _batch(16)
    reference = torchattacks.PGDL2(small_model, eps=1.5, alpha=0.3, steps=7, random_start=random_start)
    torch.manual_seed(3)
    expected = reference(x, y)
    result = adv.pgd(small_model, x, y, 1.5, 0.3, 7, random_start=random_start, norm="l2", seed=3)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)


def test_pgd_default_step_is_madrys_rule(small_model):
    x, y = _batch()
    assert torch.equal(adv.pgd(small_model, x, y, 0.2, steps=8, seed=0),
                       adv.pgd(small_model, x, y, 0.2, alpha=2.5 * 0.2 / 8, steps=8, seed=0))


def test_restarts_keep_the_worst_case_per_example(trained, digits):
    """Brute force: run each restart alone (seed + r) and pick, per example, the first start that
    fools the model, otherwise the one with the highest loss."""
    x, y = digits[0][:40], digits[1][:40]
    runs = [adv.pgd(trained, x, y, 0.15, steps=3, seed=10 + r) for r in range(4)]
    with torch.no_grad():
        logits = [trained(run) for run in runs]
    expected = []
    for i in range(len(x)):
        fooled = [r for r in range(4) if logits[r][i].argmax() != y[i]]
        losses = [F.cross_entropy(logits[r][i:i + 1], y[i:i + 1]).item() for r in range(4)]
        expected.append(runs[fooled[0] if fooled else max(range(4), key=losses.__getitem__)][i])
    result = adv.pgd(trained, x, y, 0.15, steps=3, restarts=4, seed=10)
    torch.testing.assert_close(result, torch.stack(expected), atol=TOL, rtol=0)
    robust = adv.still_correct(trained, TensorDataset(x, y), "pgd", eps=0.15, steps=3, restarts=4, seed=10)
    each = [core.predict(trained, run) == y for run in runs]
    assert torch.equal(robust, torch.stack(each).all(0))  # robust only if every restart fails


def test_project_linf_is_the_closed_form_projection():
    g = torch.Generator().manual_seed(0)
    x, x_adv = torch.rand(500, generator=g), torch.rand(500, generator=g) * 1.6 - 0.3
    # Projection onto the box [max(0, x - eps), min(1, x + eps)], coordinate by coordinate.
    low, high = (x - 0.1).clamp(min=0), (x + 0.1).clamp(max=1)
    expected = torch.minimum(torch.maximum(x_adv, low), high)
    torch.testing.assert_close(adv.project_linf(x_adv, x, 0.1), expected)


def test_project_l2_scales_onto_the_sphere_and_keeps_inner_points():
    g = torch.Generator().manual_seed(0)
    x = torch.full((6, 1, 4, 4), 0.5)
    delta = torch.randn(6, 1, 4, 4, generator=g) * torch.tensor([0.01, 0.05, 0.1, 0.5, 1, 3]).view(-1, 1, 1, 1)
    eps = 0.3
    result = adv.project_l2(x + delta, x, eps)
    for d, r in zip(delta, result - x, strict=True):
        if d.norm() <= eps:
            torch.testing.assert_close(r, d.clamp(-0.5, 0.5))  # inside the ball: only the pixel clip
        else:  # outside: the nearest point of the sphere, eps * d / |d|, then the clip
            torch.testing.assert_close(r, (eps * d / d.norm()).clamp(-0.5, 0.5))


def test_loss_gradient_matches_finite_differences(small_model):
    model = copy.deepcopy(small_model).double()
    x, y = _batch(2)
    x = x.double().clamp(0.05, 0.95)  # stay inside [0, 1] for the ± h probes
    grad = adv.loss_gradient(model, x, y)
    h, loss = 1e-6, lambda z: F.cross_entropy(model(z), y, reduction="sum").item()
    for index in [(0, 0, 3, 4), (0, 0, 14, 14), (1, 0, 20, 9)]:
        e = torch.zeros_like(x)
        e[index] = h
        numeric = (loss(x + e) - loss(x - e)) / (2 * h)
        assert abs(numeric - grad[index].item()) <= 1e-5 * max(1.0, abs(numeric))


def test_pgd_seed_is_reproducible_and_leaves_global_rng_alone(small_model):
    x, y = _batch()
    state = torch.get_rng_state()
    a = adv.pgd(small_model, x, y, 0.1, 0.02, 3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, adv.pgd(small_model, x, y, 0.1, 0.02, 3, seed=5))
    assert not torch.equal(a, adv.pgd(small_model, x, y, 0.1, 0.02, 3, seed=6))


def test_mode_flags_and_inputs_are_restored(small_model):
    model = copy.deepcopy(small_model).train()
    model.conv1.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x, y = _batch()
    x_copy, y_copy = x.clone(), y.clone()
    adv.fgsm(model, x, y, 0.1)
    adv.pgd(model, x, y, 0.1, steps=2, restarts=2, seed=0)
    adv.loss_gradient(model, x, y)
    adv.fooling_image(model, x[0], target=3, max_steps=2)
    adv.robust_accuracy(model, TensorDataset(x, y), "fgsm", eps=0.1)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy) and not x.requires_grad


def test_a_single_image_comes_back_as_a_single_image(small_model):
    x, y = _batch(1)
    assert adv.fgsm(small_model, x[0], y, 0.1).shape == x[0].shape
    assert adv.pgd(small_model, x[0], y, 0.1, steps=2, seed=0).shape == x[0].shape


def test_targeted_attacks_reach_the_target(trained, digits):
    x, y = digits[0][:50], digits[1][:50]
    target = (y + 1) % 10
    x_adv = adv.pgd(trained, x, target, eps=0.5, alpha=0.05, steps=30, targeted=True, seed=0)
    _assert_valid(x_adv, x, 0.5)
    pgd_success = (core.predict(trained, x_adv) == target).float().mean()
    fgsm_success = (core.predict(trained, adv.fgsm(trained, x, target, 0.5, targeted=True)) == target).float().mean()
    assert pgd_success >= 0.95 and fgsm_success > (core.predict(trained, x) == target).float().mean()


def test_fooling_image_reaches_the_target(trained, digits):
    image = digits[0][0]
    target = (digits[1][0].item() + 3) % 10
    fooled, steps = adv.fooling_image(trained, image, target, lr=0.02, max_steps=200)
    assert fooled.shape == image.shape and 0 < steps < 200
    assert core.predict(trained, fooled.unsqueeze(0)).item() == target
    assert fooled.min() >= 0 and fooled.max() <= 1


def test_fooling_image_takes_no_step_when_already_right(trained, digits):
    image = digits[0][:1]
    predicted = core.predict(trained, image).item()
    fooled, steps = adv.fooling_image(trained, image, predicted)
    assert steps == 0 and torch.equal(fooled, image)


# --------------------------------------------------------------------------- evaluation


def test_pgd_is_at_least_as_strong_as_fgsm_and_restarts_help(trained, digits):
    data = TensorDataset(*digits)
    for eps in (0.05, 0.15):
        fgsm_acc = adv.robust_accuracy(trained, data, "fgsm", eps=eps)
        pgd_acc = adv.robust_accuracy(trained, data, "pgd", eps=eps, steps=10, seed=0)
        restarted = adv.robust_accuracy(trained, data, "pgd", eps=eps, steps=10, restarts=3, seed=0)
        assert restarted <= pgd_acc <= fgsm_acc <= adv.robust_accuracy(trained, data)


def test_accuracy_vs_eps_starts_clean_and_falls(trained, digits):
    data = TensorDataset(*digits)
    curve = adv.accuracy_vs_eps(trained, data, [0.0, 0.1, 0.3], "pgd", steps=5, seed=0, progress=False)
    assert curve[0] == pytest.approx(core.accuracy(trained, data))
    assert curve[0] > curve[1] > curve[2]


def test_fooling_rate_is_zero_at_zero_budget_and_grows(trained, digits):
    rates = adv.fooling_rate(trained, digits[0][:60], [0.0, 0.1, 0.3], "pgd", steps=5, seed=0, progress=False)
    assert rates[0] == 0.0 and rates[0] < rates[1] < rates[2]


def test_transfer_matrix_diagonal_and_reference_labels(small_model, trained, other, digits):
    x, y = digits[0][:40], digits[1][:40]
    nets = {"trained": trained, "other": other}
    table = adv.transfer_matrix(nets, x, y, "pgd", eps=0.2, steps=5, seed=0)
    assert list(table.columns) == ["trained", "other"]
    assert list(table.index) == ["crafted on trained", "crafted on other", "clean"]
    for name in nets:  # white-box is at least as strong as transfer, and both lower accuracy
        assert table.loc[f"crafted on {name}", name] <= table.loc[f"crafted on {[n for n in nets if n != name][0]}",
                                                                    name] <= table.loc["clean", name]
    assert table.loc["clean", "trained"] == pytest.approx(core.accuracy(trained, TensorDataset(x, y)))
    own = adv.transfer_matrix({"random": small_model}, x, attack="fgsm", eps=0.0)  # y=None: own predictions
    assert own.to_numpy().tolist() == [[1.0], [1.0]]


def test_masking_checks_pass_on_the_network_and_catch_masked_gradients(trained, other, digits):
    """The control: the same decisions with saturated logits. Gradient attacks stall on it, a transfer
    attack from the unmasked network does not, and the checks flag it."""
    data = TensorDataset(digits[0][:100], digits[1][:100])
    masked = adv.masked_gradients(trained)
    x, y = data.tensors
    right = core.predict(trained, x) == y
    assert torch.equal(core.predict(masked, x), core.predict(trained, x))
    flat = adv.loss_gradient(masked, x[right], y[right]).flatten(1).abs().amax(1) == 0
    assert flat.float().mean() > 0.8  # the loss gradient of a correctly classified digit is exactly zero
    kwargs = dict(eps=0.1, l2_eps=1.0, steps=(5, 20), restarts=2, progress=False)
    honest = adv.robustness_report(trained, data, transfer_from=other, **kwargs)
    fooled = adv.robustness_report(masked, data, transfer_from=trained, **kwargs)
    assert honest["PGD, ε = 0"] == honest["clean"] and honest["worst case"] <= honest["PGD-20 × 2 restarts"]
    assert all(adv.masking_checks(honest).values())
    checks = adv.masking_checks(fooled)
    assert checks["ε = 0 gives the clean accuracy"] and not checks["black-box is not stronger than white-box"]


# --------------------------------------------------------------------------- the linear case in closed form


def _vertices(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Every corner of the box [max(0, x - eps), min(1, x + eps)] of one flat image (D,): (2^D, D)."""
    low, high = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    return torch.stack([torch.where(torch.tensor(bits, dtype=torch.bool), high, low)
                        for bits in itertools.product([0, 1], repeat=len(x))])


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_robust_logits_against_brute_force(classes):
    """The maximum of a linear margin over a box is at a corner: enumerate all 2^D corners."""
    d, eps = 8, 0.15
    net = _linear(d, classes, seed=classes)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 1, 2, 4, generator=g), torch.randint(0, classes, (12,), generator=g)
    worst = adv.linear_robust_logits(net, x, y, eps).detach()
    for i in range(len(x)):
        with torch.no_grad():
            corners = net(_vertices(x[i].flatten(), eps))  # (2^D, K)
        margins = corners - corners[:, y[i]:y[i] + 1]  # z_j - z_y at each corner
        torch.testing.assert_close(worst[i] - worst[i, y[i]], margins.amax(0), atol=1e-5, rtol=0)
        robust = (margins.amax(0) < 0).sum() == classes - 1
        assert robust == (worst[i].argmax() == y[i])
        ce_max = F.cross_entropy(corners, y[i].repeat(len(corners)), reduction="none").max()
        ce_closed = F.cross_entropy(worst[i:i + 1], y[i:i + 1])
        if classes == 2:
            torch.testing.assert_close(ce_closed, ce_max, atol=1e-5, rtol=0)  # exact for two classes
        else:
            assert ce_closed >= ce_max - 1e-5  # an upper bound for more


def test_linear_robust_logits_binary_is_margin_minus_eps_l1():
    """Away from the pixel box, the worst margin of a binary linear model is margin - eps * ||w1 - w0||_1."""
    net = _linear(16, 2, seed=0)
    x, y, eps = torch.full((3, 1, 4, 4), 0.5), torch.tensor([0, 1, 1]), 0.1
    worst = adv.linear_robust_logits(net, x, y, eps).detach()
    with torch.no_grad():
        z = net(x)
    w = net[1].weight[1] - net[1].weight[0]
    margin = (z[:, 1] - z[:, 0]) * (2 * y - 1)
    torch.testing.assert_close((worst[:, 1] - worst[:, 0]) * (2 * y - 1), margin - eps * w.abs().sum(), atol=1e-5,
                               rtol=0)


def test_pgd_never_beats_the_closed_form_and_fgsm_attains_it_for_two_classes():
    net = _linear(784, 2, seed=1)
    x, y = _batch(16)
    y = y % 2
    eps = 0.05
    closed = F.cross_entropy(adv.linear_robust_logits(net, x, y, eps), y, reduction="none").detach()
    with torch.no_grad():
        attacked = F.cross_entropy(net(adv.pgd(net, x, y, eps, steps=20, seed=0)), y, reduction="none")
        one_step = F.cross_entropy(net(adv.fgsm(net, x, y, eps)), y, reduction="none")
    assert (attacked <= closed + 1e-5).all()
    torch.testing.assert_close(one_step, closed, atol=1e-5, rtol=0)  # FGSM is exact for a binary linear model


# --------------------------------------------------------------------------- training


def test_adversarial_loss_through_core_train_raises_robust_accuracy(trained, digits):
    data = TensorDataset(*digits)
    robust = copy.deepcopy(trained)
    history = core.train(robust, assets.mnist(train=True, n=1000), epochs=1, seed=0, progress=False,
                         loss_fn=adv.adversarial_loss(eps=0.2, steps=3, seed=0))
    assert len(history["loss"]) == 16 and not robust.training
    before = adv.robust_accuracy(trained, data, "pgd", eps=0.2, steps=10, seed=0)
    after = adv.robust_accuracy(robust, data, "pgd", eps=0.2, steps=10, seed=0)
    assert after >= before + 0.05


def test_exact_linear_training_raises_certified_accuracy_and_a_random_control_has_none(digits):
    train, eps = assets.mnist(train=True, n=1500), 0.1
    x, y = digits

    def certified(net):
        return (adv.linear_robust_logits(net, x, y, eps).argmax(1) == y).float().mean().item()

    standard, robust = _linear(784, 10, 0), _linear(784, 10, 0)
    core.train(standard, train, epochs=3, seed=0, progress=False)
    core.train(robust, train, epochs=3, seed=0, progress=False, loss_fn=adv.linear_robust_loss(eps))
    random_control = _linear(784, 10, 1)
    assert certified(robust) >= certified(standard) + 0.2 and certified(random_control) <= 0.15
    assert certified(robust) <= adv.robust_accuracy(robust, TensorDataset(x, y), "pgd", eps=eps, steps=20, seed=0)


def test_mnist_model_records_training_and_reloads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    first = adv.mnist_model("linear", "exact", eps=0.1, epochs=2)
    record = adv.training_record(first)
    assert first.train_seconds > 0 and list(record.index) == [1, 2] and record["seconds"].is_monotonic_increasing
    assert record.attrs["best_epoch"] in (1, 2) and record.notna().all().all()
    again = adv.mnist_model("linear", "exact", eps=0.1, epochs=2)
    assert again.train_seconds is None and adv.training_record(again).equals(record)
    assert torch.equal(again.linear.weight, first.linear.weight)
    assert record["passes"].tolist() == [1.0, 2.0]  # the exact loss needs no attack: one pass a digit


def test_training_seconds_refuses_what_is_not_a_sequence_of_method_names():
    data = TensorDataset(torch.rand(8, 1, 2, 2), torch.randint(0, 2, (8,)))
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    for bad in ((), "pgd", ("standard", "madry"), [core.cross_entropy_step]):
        with pytest.raises(ValueError, match="methods must be a non-empty sequence of names"):
            adv.training_seconds(net, data, bad)
    seconds = adv.training_seconds(net, data, ("standard",), rounds=1)
    assert list(seconds.index) == ["standard"] and seconds["standard"] > 0


@pytest.mark.parametrize("method, steps, per_epoch", [("standard", 10, 1), ("pgd", 3, 4), ("fgsm", 10, 2)])
def test_training_record_counts_the_network_passes_of_each_method(tmp_path, monkeypatch, method, steps,
                                                                   per_epoch):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    model = adv.mnist_model("linear", method, eps=0.1, epochs=2, steps=steps, warm_start=False)
    assert adv.training_record(model)["passes"].tolist() == [per_epoch, 2 * per_epoch]


# --------------------------------------------------------------------------- data, figures, widget


def test_photo_crops_run_corner_to_corner():
    images, labels = adv.photo_crops(size=42, crops=3, names=["chelsea", "astronaut"])
    full = assets.load_image("chelsea", size=48)  # 42 * 8 / 7: ImageNet's resize-then-crop
    assert images.shape == (6, 3, 42, 42) and labels[:3] == ["chelsea/0", "chelsea/1", "chelsea/2"]
    assert torch.equal(images[0], full[:, :42, :42]) and torch.equal(images[2], full[:, -42:, -42:])
    assert not torch.equal(images[3], images[5])  # a square photo still gives different crops


def test_widget_attacks_the_imagenet_network():
    import ipywidgets

    panel = adv.adversarial_widget(photo="coffee", eps=4, size=64)
    assert isinstance(panel, ipywidgets.VBox)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m, x, y: adv.fgsm(m, x[0], y, 0.1), ValueError),  # one image, four labels
        (lambda m, x, y: adv.fgsm(m, (x * 255).to(torch.uint8), y, 0.1), TypeError),
        (lambda m, x, y: adv.fgsm(m, x * 2, y, 0.1), ValueError),
        (lambda m, x, y: adv.fgsm(m, x, y[:3], 0.1), ValueError),
        (lambda m, x, y: adv.fgsm(m, x, y.float(), 0.1), TypeError),
        (lambda m, x, y: adv.fgsm(m, x, y, -0.1), ValueError),
        (lambda m, x, y: adv.fgsm("model", x, y, 0.1), TypeError),
        (lambda m, x, y: adv.pgd(m, x, y, 0.1, 0.01, 0), ValueError),
        (lambda m, x, y: adv.pgd(m, x, y, 0.1, -0.01, 3), ValueError),
        (lambda m, x, y: adv.pgd(m, x, y, 0.1, norm="l1"), ValueError),
        (lambda m, x, y: adv.pgd(m, x, y, 0.1, restarts=3, random_start=False), ValueError),
        (lambda m, x, y: adv.project_linf(x, x[:2], 0.1), ValueError),
        (lambda m, x, y: adv.fooling_image(m, x[0], target=10), ValueError),
        (lambda m, x, y: adv.fooling_image(m, x, target=1), ValueError),
        (lambda m, x, y: adv.robust_accuracy(m, TensorDataset(x, y), "deepfool"), ValueError),
        (lambda m, x, y: adv.robust_accuracy(m, "digits"), TypeError),
        (lambda m, x, y: adv.linear_robust_logits(m, x, y, 0.1), ValueError),  # not a linear model
        (lambda m, x, y: adv.transfer_matrix({}, x), TypeError),
        (lambda m, x, y: adv.mnist_model("resnet"), ValueError),
        (lambda m, x, y: adv.mnist_model("cnn", "exact"), ValueError),
    ],
)
def test_bad_inputs_raise_with_a_sentence(small_model, call, error):
    x, y = _batch(4)
    with pytest.raises(error, match=r"\w+ \w+"):
        call(small_model, x, y)
