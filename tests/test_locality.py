"""Tests of utils.locality against independent references.

* back-propagation against centred finite differences and against PyTorch autograd;
* the perceptron against Novikoff's mistake bound and the XOR impossibility;
* connectivity labels against scipy.ndimage.label (an independent component count);
* the flood fill against scipy's labelling, and the Minsky-Papert additivity argument;
* the learned networks: the fixed CNN's receptive field against the support of its
  gradient, Minsky and Papert's identity on its logits for any weights, the recurrent
  network against the flood fill, and both trained networks against their
  random-weight controls.
"""

import numpy as np
import pytest
import torch
from scipy import ndimage

from utils import core, locality


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


# ----------------------------------------------------------------------------- data
def test_xor_dataset_is_the_truth_table():
    X, y = locality.xor_dataset()
    assert X.shape == (4, 2) and y.shape == (4,)
    assert set(np.unique(X)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y, np.logical_xor(X[:, 0], X[:, 1]).astype(int))


def test_logic_dataset_rejects_unknown_names():
    with pytest.raises(ValueError, match="'nor'"):
        locality.logic_dataset("nor")


# ----------------------------------------------------------------------------- perceptron
@pytest.mark.parametrize("name", ["and", "or", "nand"])
def test_perceptron_converges_on_separable_logic(name):
    X, y = locality.logic_dataset(name)
    p = locality.Perceptron().fit(X, y)
    assert p.converged_ and p.errors_[-1] == 0
    np.testing.assert_array_equal(p.predict(X), y)


@pytest.mark.parametrize("max_epochs", [10, 100, 500])
def test_perceptron_never_converges_on_xor(max_epochs):
    X, y = locality.xor_dataset()
    p = locality.Perceptron(max_epochs=max_epochs).fit(X, y)
    assert not p.converged_
    assert len(p.errors_) == max_epochs and min(p.errors_) > 0
    assert (p.predict(X) != y).any()  # no line gets all four points right


@pytest.mark.parametrize("seed", range(4))
def test_perceptron_obeys_novikoff_bound_on_random_separable_data(seed):
    rng = np.random.default_rng(seed)
    w_true, b_true = rng.normal(size=5), 0.3
    X = rng.uniform(-1, 1, size=(400, 5))
    margin_raw = X @ w_true + b_true
    X = X[np.abs(margin_raw) > 0.2]  # keep a margin
    y = (X @ w_true + b_true > 0).astype(int)
    p = locality.Perceptron(lr=1.0, max_epochs=1000).fit(X, y)
    assert p.converged_
    np.testing.assert_array_equal(p.predict(X), y)
    # Novikoff (1962): mistakes <= (R / gamma)^2 with x augmented by a 1 for the bias.
    R = np.linalg.norm(np.column_stack([X, np.ones(len(X))]), axis=1).max()
    gamma = 0.2 / np.linalg.norm(np.append(w_true, b_true))
    assert sum(p.errors_) <= (R / gamma) ** 2


def test_perceptron_validates_input():
    with pytest.raises(ValueError, match="0s and 1s"):
        locality.Perceptron().fit(np.zeros((3, 2)), np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="lr must be positive"):
        locality.Perceptron(lr=0)
    with pytest.raises(RuntimeError, match="fit"):
        locality.Perceptron().predict(np.zeros((1, 2)))


# ----------------------------------------------------------------------------- MLP
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backprop_matches_finite_differences(activation, seed):
    rng = np.random.default_rng(seed + 10)
    net = locality.MLP([3, 5, 4, 2], activation=activation, seed=seed)
    X, y = rng.normal(size=(7, 3)), rng.uniform(size=(7, 2))
    analytic, numeric = net.gradients(X, y), locality.numerical_gradients(net, X, y)
    assert len(analytic) == len(numeric) == 3
    for (dW, db), (nW, nb), (W, b) in zip(analytic, numeric, net.params, strict=True):
        assert dW.shape == nW.shape == W.shape and db.shape == nb.shape == b.shape
        assert relative_error(dW, nW) < 1e-6
        assert relative_error(db, nb) < 1e-6


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_backprop_matches_torch_autograd(activation):
    rng = np.random.default_rng(3)
    net = locality.MLP([2, 4, 1], activation=activation, seed=3)
    X, y = rng.normal(size=(5, 2)), rng.integers(0, 2, size=5)
    params = [
        (torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
        for W, b in net.params
    ]
    h = torch.tensor(X)
    for i, (W, b) in enumerate(params):
        z = h @ W + b
        h = torch.sigmoid(z) if i == len(params) - 1 else getattr(torch, activation)(z)
    loss = 0.5 * ((h[:, 0] - torch.tensor(y, dtype=torch.float64)) ** 2).sum()
    loss.backward()
    assert np.isclose(loss.item(), net.loss(X, y))
    for (dW, db), (W, b) in zip(net.gradients(X, y), params, strict=True):
        np.testing.assert_allclose(dW, W.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_numerical_gradients_restore_parameters():
    net = locality.MLP([2, 3, 1], seed=0)
    before = [(W.copy(), b.copy()) for W, b in net.params]
    locality.numerical_gradients(net, *locality.xor_dataset())
    for (W, b), (W0, b0) in zip(net.params, before, strict=True):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("seed", range(5))
def test_mlp_learns_xor_from_several_seeds(seed):
    X, y = locality.xor_dataset()
    net = locality.MLP([2, 4, 1], activation="sigmoid", seed=seed)
    losses = net.fit(X, y, lr=2.0, epochs=3000)
    np.testing.assert_array_equal(net.predict(X), y)  # 100 % accuracy
    assert losses[-1] < 0.05 < losses[0]


def test_mlp_sgd_with_minibatches_learns_xor():
    X, y = locality.xor_dataset()
    net = locality.MLP([2, 4, 1], activation="tanh", seed=0)
    net.fit(X, y, lr=0.5, epochs=2000, batch_size=1, seed=0)
    np.testing.assert_array_equal(net.predict(X), y)


def test_mlp_validates_input():
    with pytest.raises(ValueError, match="softmax"):
        locality.MLP([2, 2, 1], activation="softmax")
    with pytest.raises(ValueError, match="at least two"):
        locality.MLP([2])
    net = locality.MLP([2, 2, 1])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        net.forward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="y must have shape"):
        net.gradients(np.zeros((4, 2)), np.zeros(3))


# ----------------------------------------------------------------------------- connectivity
@pytest.mark.parametrize("size", [12, 13, 17, 24, 40])
def test_connectivity_labels_match_scipy_component_count(size):
    images, labels = locality.connectivity_dataset(300, size, seed=size)
    assert images.shape == (300, size, size) and set(np.unique(images)) == {0, 1}
    structure = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
    counts = np.array([ndimage.label(image, structure=structure)[1] for image in images])
    np.testing.assert_array_equal(labels, (counts == 1).astype(int))


@pytest.mark.parametrize("n", [2, 7, 100, 301])
def test_connectivity_classes_are_balanced(n):
    _, labels = locality.connectivity_dataset(n, 16, seed=1)
    assert abs(int(labels.sum()) - (n - labels.sum())) <= 1


def test_connectivity_dataset_is_reproducible_and_validated():
    a, _ = locality.connectivity_dataset(20, 16, seed=5)
    b, _ = locality.connectivity_dataset(20, 16, seed=5)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="at least 12"):
        locality.connectivity_dataset(10, 8)
    with pytest.raises(ValueError, match="at least 2"):
        locality.connectivity_dataset(1, 16)


@pytest.mark.parametrize("size", [12, 20, 32])
def test_quadruple_differs_only_at_the_ends_and_local_counts_are_additive(size):
    images, labels = locality.minsky_papert_quadruple(size, seed=size)
    np.testing.assert_array_equal(labels, [0, 1, 1, 0])
    components = [ndimage.label(image)[1] for image in images]
    assert components == [2, 1, 1, 2]
    # Minsky-Papert: when no k x k window sees both ends, every count of local
    # patterns satisfies c(0,0) + c(1,1) = c(0,1) + c(1,0), so a linear threshold
    # on them cannot be right on all four figures.
    columns = np.flatnonzero((images[0] != images[3]).any(axis=0))
    left, right = columns[columns < size // 2], columns[columns >= size // 2]
    assert len(left) == len(right) == 3  # each switch spans three columns
    k = 3
    assert (right.min() - left.max() >= k) == (size >= 20)
    if size >= 20:
        counts, _ = locality.local_pattern_counts(images, k)
        counts = counts.toarray()
        np.testing.assert_array_equal(counts[0] + counts[3], counts[1] + counts[2])
        assert (counts[0] != counts[1]).any()  # the counts do see each end...


def test_local_pattern_counts_count_every_window():
    images, _ = locality.connectivity_dataset(5, 14, seed=0)
    for k in (1, 2, 3):
        counts, vocabulary = locality.local_pattern_counts(images, k)
        np.testing.assert_array_equal(counts.sum(axis=1).A1, (14 - k + 1) ** 2)
    counts, vocabulary = locality.local_pattern_counts(images, 1)
    np.testing.assert_array_equal(vocabulary, [0, 1])
    np.testing.assert_array_equal(counts[:, 1].toarray().ravel(), images.sum(axis=(1, 2)))


@pytest.mark.parametrize("size", [12, 24])
def test_flood_fill_agrees_with_scipy_when_run_long_enough(size):
    images, labels = locality.connectivity_dataset(100, size, seed=2)
    np.testing.assert_array_equal(locality.propagate_connectivity(images, size * size), labels)
    random = (np.random.default_rng(0).random((50, 10, 10)) < 0.5).astype(np.uint8)
    truth = np.array([ndimage.label(r)[1] == 1 for r in random]).astype(int)
    np.testing.assert_array_equal(locality.propagate_connectivity(random, 100), truth)


def test_short_flood_fill_calls_long_connected_figures_disconnected():
    images, labels = locality.connectivity_dataset(60, 32, seed=0)
    predictions = locality.propagate_connectivity(images, 5)
    assert predictions.sum() == 0  # a marker 5 steps from its start cannot cover a long curve


def test_local_perceptron_fails_on_large_images_and_flood_fill_succeeds():
    results = locality.connectivity_experiment([12, 32], ks=[5], n_train=300, n_test=300, seed=0)
    assert results["k=5"][12] > 0.85  # the window sees both switches in small images
    assert abs(results["k=5"][32] - 0.5) < 0.1  # ... and is at chance in large ones
    assert results["flood fill"] == {12: 1.0, 32: 1.0}


# ----------------------------------------------------------------------------- learned networks
@pytest.mark.parametrize("size", [12, 24])
def test_flood_fill_marks_the_start_pixels_piece(size):
    images, _ = locality.connectivity_dataset(40, size, seed=3)
    marker = locality.flood_fill(images, size * size)
    x, _ = locality.connectivity_tensors(images, np.zeros(40)).tensors
    for image, piece, start in zip(images, marker, x[:, 1].numpy(), strict=True):
        rows, cols = np.nonzero(image)
        assert start.sum() == 1 and start[rows[0], cols[0]] == 1  # first foreground pixel in reading order
        pieces, _ = ndimage.label(image)  # 4-connectivity
        np.testing.assert_array_equal(piece, pieces == pieces[rows[0], cols[0]])


def test_fixed_cnn_receptive_field_is_the_support_of_its_gradient():
    net = locality.FixedDepthCNN()
    assert core.receptive_field(net, "features", channels=2)["size"] == 14
    x = torch.rand(1, 2, 40, 40, requires_grad=True)
    features = net.features(x)
    features[0, :, 10, 10].sum().backward()  # one unit of the 20 x 20 map
    rows = np.flatnonzero(x.grad.abs().sum(dim=(0, 1, 3)).numpy())
    cols = np.flatnonzero(x.grad.abs().sum(dim=(0, 1, 2)).numpy())
    assert rows.max() - rows.min() + 1 <= 14 and cols.max() - cols.min() + 1 <= 14


@pytest.mark.parametrize("seed", range(4))
def test_fixed_cnn_obeys_minsky_papert_identity_whatever_its_weights(seed):
    torch.manual_seed(seed)
    net = locality.FixedDepthCNN()
    f = locality.quadruple_margins(net, size=40, seed=seed)  # no 14-pixel window sees both switches
    assert abs(f[0] + f[3] - f[1] - f[2]) < 1e-6  # float32 rounding only
    small = locality.quadruple_margins(net, size=12, seed=seed)  # a window sees both: no identity
    assert abs(small[0] + small[3] - small[1] - small[2]) > 1e-5


@pytest.mark.parametrize("size", [12, 24])
def test_recurrent_fill_with_a_perfect_gate_is_the_flood_fill(size):
    net = locality.RecurrentFill()
    with torch.no_grad():
        net.gate.weight.fill_(20.0)
        net.gate.bias.fill_(-10.0)  # gate 1 on the figure, 0 on the background
    images, labels = locality.connectivity_dataset(60, size, seed=size)
    data = locality.connectivity_tensors(images, labels)
    np.testing.assert_array_equal(core.predict(net, data.tensors[0]).numpy(), labels)
    with torch.no_grad():
        marker = net.marker(data.tensors[0])[:, 0].numpy() > 0.5
    np.testing.assert_array_equal(marker, locality.flood_fill(images, size * size))
    assert core.receptive_field(net, "propagate", channels=2, size=size)["size"] == 6 * size + 1


def test_piece_loss_gives_the_gate_a_gradient():
    data = locality.connectivity_tensors(*locality.connectivity_dataset(8, 12))
    net = locality.RecurrentFill()
    loss, logits = locality.piece_loss(net, *data.tensors)
    loss.backward()
    assert net.gate.weight.grad.abs().item() > 0 and logits.shape == (8, 2)


def test_trained_fixed_cnn_degrades_beyond_its_receptive_field_and_recurrent_network_does_not():
    out = locality.learned_connectivity_experiment([12, 24], n_train=800, n_test=200, epochs=4, progress=False)
    fixed, recurrent = out["accuracy"]["fixed-depth CNN"], out["accuracy"]["recurrent network"]
    assert fixed[12] > 0.9 and fixed[24] < 0.65
    assert recurrent == {12: 1.0, 24: 1.0}
    assert max(out["control"].values()) < 0.65  # random weights fail
    assert out["receptive_field"]["fixed-depth CNN"] == {12: 14, 24: 14}
    assert out["receptive_field"]["recurrent network"] == {12: 73, 24: 145}


def test_connectivity_network_validates_its_kind():
    with pytest.raises(ValueError, match="'resnet'"):
        locality.connectivity_network("resnet", 12, 10, 1)
    with pytest.raises(ValueError, match="at least 12"):
        locality.connectivity_network("fixed", 8, 10, 1)


# ----------------------------------------------------------------------------- order of a predicate
@pytest.mark.parametrize("n", range(1, 7))
def test_parity_has_order_n(n):
    # Minsky-Papert Theorem 3.1: parity on n points has order n (closed form).
    assert locality.predicate_order(lambda x: x.sum() % 2 == 1, n) == n


@pytest.mark.parametrize("n", [2, 4, 6])
def test_threshold_predicates_have_order_one_and_equality_order_two(n):
    assert (
        locality.predicate_order(lambda x: x.sum() >= n // 2, n) == 1
    )  # a perceptron of masks of size 1
    assert locality.predicate_order(lambda x: x[0] == x[-1], n) == 2  # XNOR of two points
    assert locality.predicate_order(lambda x: bool(x.all()), n) == 1  # AND is linearly separable
    assert locality.predicate_order(lambda x: True, n) == 0


def test_predicate_order_validates_n():
    with pytest.raises(ValueError, match="got 11"):
        locality.predicate_order(lambda x: True, 11)


# ----------------------------------------------------------------------------- figures and widget
def test_figures_and_xor_playground_widget_draw():
    import ipywidgets
    import matplotlib.pyplot as plt


    X, y = locality.xor_dataset()
    net = locality.MLP([2, 3, 1], activation="tanh", seed=0)
    net.fit(X, y, lr=0.5, epochs=50)
    assert len(locality.plot_hidden_units(net, X, y).axes) >= 4
    results = {"k=3": {12: 0.7, 16: 0.5}, "flood fill": {12: 1.0, 16: 1.0}}
    assert locality.plot_connectivity_experiment(results).axes[0].get_ylabel() == "test accuracy"
    learned = {"accuracy": {"fixed-depth CNN": {12: 1.0, 24: 0.5}, "recurrent network": {12: 1.0, 24: 1.0}},
               "receptive_field": {"fixed-depth CNN": {12: 14, 24: 14}, "recurrent network": {12: 73, 24: 145}},
               "control": {"fixed-depth CNN": 0.5, "recurrent network": 0.5}}
    legend = [t.get_text() for t in locality.plot_learned_connectivity(learned).axes[0].get_legend().texts]
    assert "fixed-depth CNN, trained (receptive field 14 px)" in legend
    panel = locality.xor_playground_widget(hidden=2, epochs=100, activation="relu")
    assert isinstance(panel, ipywidgets.VBox)
    plt.close("all")
