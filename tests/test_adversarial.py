"""Tests of utils.adversarial against torchattacks, closed forms and finite differences."""

from __future__ import annotations

import copy

import pytest
import torch
import torchattacks

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
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = assets.mnist(train=False, n=120).tensors
    return x, y


def _batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _assert_valid(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + TOL


@pytest.mark.parametrize("eps", [0.0, 0.03, 0.3, 1.0])
@pytest.mark.parametrize("targeted", [False, True])
def test_attacks_stay_in_box_and_ball(small_model, eps, targeted):
    x, y = _batch()
    _assert_valid(adv.fgsm(small_model, x, y, eps, targeted=targeted), x, eps)
    _assert_valid(adv.pgd(small_model, x, y, eps, alpha=eps / 4, steps=5, targeted=targeted, seed=0), x, eps)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_torchattacks(small_model, targeted):
    x, y = _batch(16)
    reference = torchattacks.FGSM(small_model, eps=0.1)
    if targeted:
        reference.set_mode_targeted_by_function(lambda images, labels: labels)  # y = targets
    expected = reference(x, y)
    torch.testing.assert_close(adv.fgsm(small_model, x, y, 0.1, targeted=targeted), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_without_random_start_matches_torchattacks(small_model, targeted):
    x, y = _batch(16)
    reference = torchattacks.PGD(small_model, eps=0.1, alpha=0.02, steps=7, random_start=False)
    if targeted:
        reference.set_mode_targeted_by_function(lambda images, labels: labels)  # y = targets
    expected = reference(x, y)
    result = adv.pgd(small_model, x, y, 0.1, 0.02, 7, random_start=False, targeted=targeted)
    torch.testing.assert_close(result, expected, atol=TOL, rtol=0)


def test_project_linf_is_the_closed_form_projection():
    g = torch.Generator().manual_seed(0)
    x, x_adv = torch.rand(500, generator=g), torch.rand(500, generator=g) * 1.6 - 0.3
    # Projection onto the box [max(0, x - eps), min(1, x + eps)], coordinate by coordinate.
    low, high = (x - 0.1).clamp(min=0), (x + 0.1).clamp(max=1)
    expected = torch.minimum(torch.maximum(x_adv, low), high)
    torch.testing.assert_close(adv.project_linf(x_adv, x, 0.1), expected)


def test_loss_gradient_matches_finite_differences(small_model):
    model = copy.deepcopy(small_model).double()
    x, y = _batch(2)
    x = x.double().clamp(0.05, 0.95)  # stay inside [0, 1] for the ± h probes
    grad = adv.loss_gradient(model, x, y)
    h, loss = 1e-6, lambda z: torch.nn.functional.cross_entropy(model(z), y, reduction="sum").item()
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
    adv.pgd(model, x, y, 0.1, 0.02, 2, seed=0)
    adv.loss_gradient(model, x, y)
    adv.fooling_image(model, x[0], target=3, max_steps=2)
    adv.robust_accuracy(model, torch.utils.data.TensorDataset(x, y), "fgsm", eps=0.1)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy) and not x.requires_grad


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


def test_pgd_is_at_least_as_strong_as_fgsm(trained, digits):
    data = torch.utils.data.TensorDataset(*digits)
    for eps in (0.05, 0.15):
        fgsm_acc = adv.robust_accuracy(trained, data, "fgsm", eps=eps)
        pgd_acc = adv.robust_accuracy(trained, data, "pgd", eps=eps, alpha=eps / 4, steps=10, seed=0)
        assert pgd_acc <= fgsm_acc <= adv.robust_accuracy(trained, data)


def test_accuracy_vs_eps_starts_clean_and_falls(trained, digits):
    data = torch.utils.data.TensorDataset(*digits)
    curve = adv.accuracy_vs_eps(trained, data, [0.0, 0.1, 0.3], "pgd", alpha_ratio=0.25, steps=5, seed=0)
    assert curve[0] == pytest.approx(core.accuracy(trained, data))
    assert curve[0] > curve[1] > curve[2]


def test_adversarial_training_raises_robust_accuracy(trained, digits):
    data = torch.utils.data.TensorDataset(*digits)
    robust = copy.deepcopy(trained)
    history = adv.adversarial_training(robust, assets.mnist(train=True, n=1000), eps=0.2, alpha=0.15, steps=3,
                                       seed=0, progress=False)
    assert len(history["loss"]) == 16 and not robust.training
    attack = dict(eps=0.2, alpha=0.05, steps=10, seed=0)
    before = adv.robust_accuracy(trained, data, "pgd", **attack)
    after = adv.robust_accuracy(robust, data, "pgd", **attack)
    assert after >= before + 0.05


def test_transfer_table_shape(small_model, trained, digits):
    data = torch.utils.data.TensorDataset(digits[0][:20], digits[1][:20])
    table = adv.transfer_table({"a": trained}, {"a": trained, "b": small_model}, data, "fgsm", eps=0.1)
    assert list(table.columns) == ["a", "b"] and list(table.index) == ["crafted on a", "clean"]
    assert table.loc["crafted on a", "a"] <= table.loc["clean", "a"]


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m, x, y: adv.fgsm(m, x[0], y, 0.1), ValueError),  # missing batch dimension
        (lambda m, x, y: adv.fgsm(m, (x * 255).to(torch.uint8), y, 0.1), TypeError),
        (lambda m, x, y: adv.fgsm(m, x * 2, y, 0.1), ValueError),
        (lambda m, x, y: adv.fgsm(m, x, y[:3], 0.1), ValueError),
        (lambda m, x, y: adv.fgsm(m, x, y.float(), 0.1), TypeError),
        (lambda m, x, y: adv.fgsm(m, x, y, -0.1), ValueError),
        (lambda m, x, y: adv.fgsm("model", x, y, 0.1), TypeError),
        (lambda m, x, y: adv.pgd(m, x, y, 0.1, 0.01, 0), ValueError),
        (lambda m, x, y: adv.pgd(m, x, y, 0.1, -0.01, 3), ValueError),
        (lambda m, x, y: adv.project_linf(x, x[:2], 0.1), ValueError),
        (lambda m, x, y: adv.fooling_image(m, x[0], target=10), ValueError),
        (lambda m, x, y: adv.fooling_image(m, x, target=1), ValueError),
        (lambda m, x, y: adv.robust_accuracy(m, torch.utils.data.TensorDataset(x, y), "deepfool"), ValueError),
        (lambda m, x, y: adv.robust_accuracy(m, x), TypeError),
    ],
)
def test_bad_inputs_raise_with_a_sentence(small_model, call, error):
    x, y = _batch(4)
    with pytest.raises(error, match=r"\w+ \w+"):
        call(small_model, x, y)
