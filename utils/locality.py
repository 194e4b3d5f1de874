"""Chapter 1 — locality: perceptrons, XOR, connectivity and back-propagation.

Minsky and Papert (1969) asked which predicates of an image a perceptron can
compute when each of its features looks at only a few points. This module holds
the chapter's algorithms, each small enough to be read on the page:

* :class:`Perceptron` — Rosenblatt's learning rule; it converges on linearly
  separable data (AND, OR) and never on XOR;
* :class:`MLP` and :func:`numerical_gradients` — a NumPy multi-layer perceptron
  whose gradients are the chain rule written out (Rumelhart, Hinton and
  Williams, 1986), checked against centred finite differences;
* :func:`connectivity_dataset`, :func:`minsky_papert_quadruple` — binary images
  whose connectivity is decided by two switches far apart, Minsky and Papert's
  construction of §0.8 / Figure 5.1;
* :func:`local_pattern_counts`, :func:`flood_fill`, :func:`propagate_connectivity`
  and :func:`connectivity_experiment` — a perceptron of bounded support (linear
  model on k×k patch patterns) against a recurrent "flood fill" network;
* learned networks on connectivity: :class:`FixedDepthCNN` (a fixed receptive
  field) against :class:`RecurrentFill` (:func:`propagation_step` repeated, a
  receptive field that grows with the image), trained by :func:`connectivity_network`
  and compared by :func:`learned_connectivity_experiment`; :func:`quadruple_margins`
  checks Minsky and Papert's identity on a trained network;
* figures and the chapter's Try-it panel, :func:`xor_playground_widget`.

Shape letters: N samples, D input features, H hidden units, S image side.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy import sparse
from scipy.optimize import linprog
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler
from torch import nn
from torch.utils.data import TensorDataset

from . import config, core, widgets

__all__ = [
    "xor_dataset",
    "logic_dataset",
    "Perceptron",
    "MLP",
    "numerical_gradients",
    "predicate_order",
    "minsky_papert_quadruple",
    "connectivity_dataset",
    "local_pattern_counts",
    "order_k_accuracy",
    "flood_fill",
    "propagate_connectivity",
    "connectivity_experiment",
    "connectivity_tensors",
    "FixedDepthCNN",
    "propagation_step",
    "RecurrentFill",
    "piece_loss",
    "connectivity_network",
    "learned_connectivity_experiment",
    "quadruple_margins",
    "plot_decision_boundary",
    "plot_hidden_units",
    "plot_connectivity_experiment",
    "plot_learned_connectivity",
    "xor_playground_widget",
]

_ACTIVATIONS = ("sigmoid", "tanh", "relu")


# ----------------------------------------------------------------------------- data
def xor_dataset() -> tuple[np.ndarray, np.ndarray]:
    """The four points of XOR: inputs in {0, 1}², label 1 iff exactly one input is 1.

    Returns
    -------
    X : ndarray of shape (4, 2), float
    y : ndarray of shape (4,), int in {0, 1}

    References
    ----------
    Minsky, M. and Papert, S. (1969). *Perceptrons*. MIT Press.

    Examples
    --------
    >>> X, y = xor_dataset()
    >>> y.tolist()
    [0, 1, 1, 0]
    """
    return logic_dataset("xor")


def logic_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Truth table of a two-input Boolean function: ``"and"``, ``"or"``, ``"xor"``, ``"nand"``.

    Returns
    -------
    X : ndarray of shape (4, 2), float — rows (0,0), (0,1), (1,0), (1,1)
    y : ndarray of shape (4,), int in {0, 1}

    Examples
    --------
    >>> logic_dataset("and")[1].tolist()
    [0, 0, 0, 1]
    """
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    a, b = X[:, 0].astype(bool), X[:, 1].astype(bool)
    tables = {"and": a & b, "or": a | b, "xor": a ^ b, "nand": ~(a & b)}
    if name not in tables:
        raise ValueError(f"Unknown logic function {name!r}; expected one of {sorted(tables)}.")
    return X, tables[name].astype(int)


def _check_Xy(
    X: np.ndarray, y: np.ndarray, n_features: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a design matrix (N, D) and labels (N,) or (N, K); return float copies."""
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if X.ndim != 2:
        raise ValueError(
            f"X must have shape (N, D), got {X.shape}; reshape a single sample with X[None]."
        )
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must have shape (N,) or (N, K) with N = {X.shape[0]} rows of X, got {y.shape}."
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features per row but the model expects {n_features}.")
    return X, y


# ----------------------------------------------------------------------------- perceptron
class Perceptron:
    r"""Rosenblatt's perceptron: a linear threshold unit trained by error correction.

    .. math::

        \hat y = [\,w \cdot x + b > 0\,], \qquad
        w \leftarrow w + \eta\,(y - \hat y)\,x, \qquad b \leftarrow b + \eta\,(y - \hat y).

    Samples are visited in order, epoch after epoch; training stops at the
    first epoch without a mistake (``converged_ = True``). On linearly separable
    data this happens after at most :math:`(R/\gamma)^2` mistakes (Novikoff's
    bound, R the largest norm of :math:`(x, 1)`, γ the margin); on XOR it
    never happens.

    Parameters
    ----------
    lr : float, default=1.0
        Learning rate η > 0.
    max_epochs : int, default=100
        Passes over the data before giving up.

    Attributes
    ----------
    w_ : ndarray of shape (D,), b_ : float
        Weights and bias after training (start at zero).
    errors_ : list of int
        Mistakes made in each epoch.
    converged_ : bool
        Whether an epoch without mistakes was reached.

    References
    ----------
    Rosenblatt, F. (1958). The perceptron: a probabilistic model for information
    storage and organization in the brain. *Psychological Review* 65(6).

    Examples
    --------
    >>> p = Perceptron().fit(*logic_dataset("and"))
    >>> p.converged_, p.predict(logic_dataset("and")[0]).tolist()
    (True, [0, 0, 0, 1])
    """

    def __init__(self, lr: float = 1.0, max_epochs: int = 100) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}.")
        if not isinstance(max_epochs, (int, np.integer)) or max_epochs < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}.")
        self.lr, self.max_epochs = float(lr), int(max_epochs)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Perceptron:
        """Run the error-correction rule on X (N, D) with labels y (N,) in {0, 1}."""
        X, y = _check_Xy(X, y)
        if y.ndim != 1 or not np.isin(y, (0, 1)).all():
            raise ValueError("Perceptron labels y must be a vector of 0s and 1s.")
        self.w_, self.b_ = np.zeros(X.shape[1]), 0.0
        self.errors_: list[int] = []
        self.converged_ = False
        for _ in range(self.max_epochs):
            mistakes = 0
            for x_i, y_i in zip(X, y, strict=True):
                update = self.lr * (y_i - self.predict(x_i[None])[0])  # 0 when right, ±η when wrong
                self.w_ += update * x_i
                self.b_ += update
                mistakes += int(update != 0)
            self.errors_.append(mistakes)
            if mistakes == 0:
                self.converged_ = True
                break
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The activation w·x + b of each row of X (N, D), shape (N,)."""
        if not hasattr(self, "w_"):
            raise RuntimeError("This Perceptron is not fitted yet; call .fit(X, y) first.")
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.w_.shape[0]:
            raise ValueError(f"X must have shape (N, {self.w_.shape[0]}), got {X.shape}.")
        return X @ self.w_ + self.b_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Threshold output [w·x + b > 0] of each row of X (N, D), ints of shape (N,)."""
        return (self.decision_function(X) > 0).astype(int)


# ----------------------------------------------------------------------------- MLP
def _activate(z: np.ndarray, name: str) -> np.ndarray:
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))  # eq. (2) of Rumelhart et al.
    if name == "tanh":
        return np.tanh(z)
    return np.maximum(z, 0.0)


def _activation_slope(a: np.ndarray, name: str) -> np.ndarray:
    """f'(z) written through the unit's output a = f(z) (as Rumelhart et al. do)."""
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a**2
    return (a > 0).astype(float)


class MLP:
    r"""A multi-layer perceptron in NumPy, trained by back-propagation.

    Layer :math:`l` computes :math:`z_l = h_{l-1} W_l + b_l`, :math:`h_l = f(z_l)`
    with ``activation`` f in the hidden layers and the sigmoid
    :math:`\sigma(z) = 1/(1+e^{-z})` at the output, and the loss is Rumelhart,
    Hinton and Williams' total squared error (their eq. 3)

    .. math::

        E = \tfrac12 \sum_{n} \sum_{j} \big(\hat y_{nj} - y_{nj}\big)^2 .

    Parameters
    ----------
    layer_sizes : list of int
        ``[D, H_1, ..., K]``: inputs, hidden widths, outputs (at least two entries).
    activation : {"sigmoid", "tanh", "relu"}, default="sigmoid"
        Non-linearity of the hidden layers.
    seed : int, default=0
        Seed of the weight initialisation (uniform in ±1/√fan_in, ±1 at most).

    Attributes
    ----------
    params : list of (W, b)
        W of shape (n_in, n_out), b of shape (n_out,), one pair per layer.

    References
    ----------
    Rumelhart, D. E., Hinton, G. E. and Williams, R. J. (1986). Learning
    representations by back-propagating errors. *Nature* 323, 533–536.

    Examples
    --------
    >>> net = MLP([2, 4, 1], seed=0)
    >>> losses = net.fit(*xor_dataset(), lr=2.0, epochs=3000)
    >>> net.predict(xor_dataset()[0]).tolist()
    [0, 1, 1, 0]
    """

    def __init__(
        self, layer_sizes: Sequence[int], activation: str = "sigmoid", seed: int = 0
    ) -> None:
        sizes = list(layer_sizes)
        if len(sizes) < 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
            raise ValueError(
                f"layer_sizes must list at least two positive integers [D, ..., K], "
                f"got {layer_sizes!r}."
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; expected one of {_ACTIVATIONS}.")
        rng = np.random.default_rng(seed)
        # Uniform in ±1/sqrt(fan_in) (at most ±1): random enough to break the
        # symmetry between hidden units, small enough to keep sigmoids unsaturated.
        bounds = [min(1.0, 1 / np.sqrt(n_in)) for n_in in sizes[:-1]]
        self.params = [
            (rng.uniform(-r, r, (n_in, n_out)), rng.uniform(-r, r, n_out))
            for r, n_in, n_out in zip(bounds, sizes[:-1], sizes[1:], strict=True)
        ]
        self.layer_sizes, self.activation = sizes, activation

    def forward_all(self, X: np.ndarray) -> list[np.ndarray]:
        """Outputs of every layer, ``[X, h_1, ..., y_hat]`` (the backward pass needs them)."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"X must have shape (N, {self.layer_sizes[0]}), got {X.shape}.")
        outputs = [X]
        for index, (W, b) in enumerate(self.params):
            last = index == len(self.params) - 1
            outputs.append(_activate(outputs[-1] @ W + b, "sigmoid" if last else self.activation))
        return outputs

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Network output ŷ in (0, 1) for X (N, D); shape (N, K)."""
        return self.forward_all(X)[-1]

    def _targets(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X, y = _check_Xy(X, y, self.layer_sizes[0])
        y = y.reshape(len(y), -1)
        if y.shape[1] != self.layer_sizes[-1]:
            raise ValueError(
                f"y has {y.shape[1]} columns but the network has {self.layer_sizes[-1]} outputs."
            )
        return X, y

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """Total squared error E = ½ Σ (ŷ − y)² over samples and outputs."""
        X, y = self._targets(X, y)
        return 0.5 * float(np.sum((self.forward(X) - y) ** 2))

    def gradients(self, X: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        r"""∂E/∂W and ∂E/∂b of every layer by back-propagation (the chain rule).

        .. math::

            \delta_L = (\hat y - y) \odot \hat y (1 - \hat y), \quad
            \delta_{l-1} = (\delta_l W_l^\top) \odot f'(z_{l-1}), \quad
            \frac{\partial E}{\partial W_l} = h_{l-1}^\top \delta_l, \quad
            \frac{\partial E}{\partial b_l} = \textstyle\sum_n \delta_l .

        Returns a list of (dW, db) with the shapes of :attr:`params`.
        """
        X, y = self._targets(X, y)
        outputs = self.forward_all(X)
        delta = (outputs[-1] - y) * _activation_slope(outputs[-1], "sigmoid")  # ∂E/∂z at the output
        grads = []
        for index in range(len(self.params) - 1, -1, -1):
            h_below = outputs[index]
            grads.append((h_below.T @ delta, delta.sum(axis=0)))
            if index > 0:  # pass the error back through W, then through f
                delta = (delta @ self.params[index][0].T) * _activation_slope(
                    h_below, self.activation
                )
        return grads[::-1]

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        lr: float = 1.0,
        epochs: int = 1000,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> list[float]:
        r"""Gradient descent :math:`\theta \leftarrow \theta - \eta\,\partial E/\partial\theta`.

        With ``batch_size=None`` every step uses all samples (Rumelhart et al.'s
        batch rule); with a batch size, each epoch visits shuffled mini-batches
        — stochastic gradient descent in the sense of Robbins and Monro.
        Returns the loss E on all of (X, y) after each epoch.
        """
        X, y = self._targets(X, y)
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}.")
        if not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
        batch = len(X) if batch_size is None else int(batch_size)
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(epochs):
            order = rng.permutation(len(X)) if batch_size else np.arange(len(X))
            for start in range(0, len(X), batch):
                rows = order[start : start + batch]
                grads = self.gradients(X[rows], y[rows])
                for (W, b), (dW, db) in zip(self.params, grads, strict=True):
                    W -= lr * dW  # in place: self.params holds the same arrays
                    b -= lr * db
            losses.append(self.loss(X, y))
        return losses

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels [ŷ > ½]; shape (N,) for one output, (N, K) otherwise."""
        labels = (self.forward(X) > 0.5).astype(int)
        return labels[:, 0] if labels.shape[1] == 1 else labels


def numerical_gradients(
    mlp: MLP, X: np.ndarray, y: np.ndarray, h: float = 1e-5
) -> list[tuple[np.ndarray, np.ndarray]]:
    r"""Centred finite differences of the loss, with the layout of :meth:`MLP.gradients`.

    .. math::

        \frac{\partial E}{\partial \theta_i}
        \approx \frac{E(\theta + h e_i) - E(\theta - h e_i)}{2h},

    exact up to :math:`O(h^2)`. Each parameter is perturbed in place and restored.

    Examples
    --------
    >>> net = MLP([2, 3, 1]); X, y = xor_dataset()
    >>> pairs = zip(net.gradients(X, y), numerical_gradients(net, X, y))
    >>> all(np.allclose(a, n) for (a, _), (n, _) in pairs)
    True
    """
    if not isinstance(mlp, MLP):
        raise TypeError(f"mlp must be an MLP, got {type(mlp).__name__}.")
    if not h > 0:
        raise ValueError(f"h must be a small positive step such as 1e-5, got {h!r}.")
    grads = []
    for W, b in mlp.params:
        pair = []
        for theta in (W, b):
            grad = np.zeros_like(theta)
            for i in np.ndindex(theta.shape):
                saved = theta[i]
                theta[i] = saved + h
                up = mlp.loss(X, y)
                theta[i] = saved - h
                down = mlp.loss(X, y)
                theta[i] = saved
                grad[i] = (up - down) / (2 * h)
            pair.append(grad)
        grads.append((pair[0], pair[1]))
    return grads


# ----------------------------------------------------------------------------- order of a predicate
def _masks(n: int, k: int) -> list[tuple[int, ...]]:
    """All subsets S of {0, ..., n-1} with |S| <= k (the empty one is the bias)."""
    return [S for size in range(k + 1) for S in itertools.combinations(range(n), size)]


def predicate_order(predicate: Callable[[np.ndarray], bool], n: int) -> int:
    r"""The order of a predicate on n points, by linear programming over all masks.

    Minsky and Papert call ψ *of order k* when it is a linear threshold of
    masks (conjunctions) of at most k points,

    .. math::

        \psi(X) = \Big[\sum_{|S| \le k} \alpha_S \prod_{i \in S} x_i > 0\Big]
        \quad \text{for all } X \in \{0, 1\}^n ,

    and its order is the least such k (any predicate of a k-point support is a
    sum of such masks). For each k the coefficients α exist iff the linear
    program "margin ≥ 1 on all 2ⁿ inputs" is feasible.

    Parameters
    ----------
    predicate : callable
        Maps a 0/1 vector of shape (n,) to True/False.
    n : int
        Number of points of the retina, 1 ≤ n ≤ 10 (2ⁿ inputs are enumerated).

    Returns
    -------
    order : int in [0, n]

    References
    ----------
    Minsky, M. and Papert, S. (1969). *Perceptrons*, §1.3 and Theorem 3.1
    (parity has order n). MIT Press.

    Examples
    --------
    >>> predicate_order(lambda x: x.sum() % 2 == 1, 4)  # parity
    4
    >>> predicate_order(lambda x: x.sum() >= 2, 4)       # a threshold: order 1
    1
    """
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= 10:
        raise ValueError(
            f"n must be an integer in [1, 10] (2**n inputs are enumerated), got {n!r}."
        )
    inputs = np.array(list(itertools.product((0, 1), repeat=n)))
    signs = np.array([1.0 if predicate(x) else -1.0 for x in inputs])
    for k in range(n + 1):
        masks = np.column_stack([inputs[:, list(S)].prod(axis=1) for S in _masks(n, k)])
        # Feasibility of  signs * (masks @ alpha) >= 1, written as A_ub @ alpha <= b_ub.
        lp = linprog(
            np.zeros(masks.shape[1]),
            A_ub=-signs[:, None] * masks,
            b_ub=-np.ones(len(inputs)),
            bounds=(None, None),
            method="highs",
        )
        if lp.status == 0:
            return k
    raise AssertionError("unreachable: every predicate has order at most n")


# ----------------------------------------------------------------------------- connectivity images
def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 12:
        raise ValueError(f"size must be an integer of at least 12 pixels (room for four rails), got {size!r}.")
    return int(size)


def _random_geometry(size: int, rng: np.random.Generator) -> dict:
    """Where the four rails run: row offsets, end columns, and the band's vertical path."""
    gaps = rng.integers(3, 5, size=3)  # rows between successive rails: 3 or 4 (≥ 2 blank rows)
    while gaps.sum() > size - 3:
        gaps[np.argmax(gaps)] -= 1
    rails = np.concatenate([[0], np.cumsum(gaps)])
    quarter = max(1, size // 4)
    outer_left = int(rng.integers(1, quarter + 1))
    outer_right = int(rng.integers(size - 1 - quarter, size - 1))
    # The band of rails wanders up and down by single steps between the ends
    # (curved strokes like Minsky and Papert's drawings); it is flat for two
    # columns at each end, where the switches sit.
    top = np.empty(size, dtype=int)
    top[:] = int(rng.integers(1, size - 1 - rails[-1]))
    for col in range(outer_left + 4, outer_right - 3):
        step = rng.choice((-1, 0, 0, 0, 1))
        top[col:] = np.clip(top[col - 1] + step, 1, size - 2 - rails[-1])
    return {"rails": rails, "left": outer_left, "right": outer_right, "top": top}


def _draw(size: int, geometry: dict, left_state: int, right_state: int) -> np.ndarray:
    """Four horizontal rails closed at each end by a switch.

    State 0 joins the rails in pairs (1–2, 3–4); state 1 nests them (1–4 outside,
    2–3 inside). The rails form one closed curve iff the two states differ:
    equal states close two separate loops.
    """
    image = np.zeros((size, size), dtype=np.uint8)
    rails, top = geometry["rails"], geometry["top"]
    inner_left, inner_right = geometry["left"] + 2, geometry["right"] - 2
    for col in range(inner_left, inner_right + 1):
        for offset in rails:  # a vertical step joins the rail's rows in this column
            image[
                min(top[col - 1], top[col]) + offset : max(top[col - 1], top[col]) + offset + 1, col
            ] = 1
    for state, inner, outer in (
        (left_state, inner_left, geometry["left"]),
        (right_state, inner_right, geometry["right"]),
    ):
        r = top[inner] + rails
        if state == 0:
            image[r[0] : r[1] + 1, inner] = image[r[2] : r[3] + 1, inner] = 1
        else:
            image[r[1] : r[2] + 1, inner] = 1
            image[r[0] : r[3] + 1, outer] = 1
            lo, hi = sorted((inner, outer))
            image[r[0], lo : hi + 1] = image[r[3], lo : hi + 1] = 1
    return image


def minsky_papert_quadruple(size: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Minsky and Papert's four figures: one geometry, both switches in both states.

    The figures differ only at their left and right ends. Any feature that sees
    one end only adds the same amount to "connected" and "disconnected" pairs,
    so no linear threshold over such features can be right on all four.

    Returns
    -------
    images : ndarray of shape (4, size, size), uint8 in {0, 1}
        Switch states (left, right) = (0, 0), (0, 1), (1, 0), (1, 1).
    labels : ndarray of shape (4,)
        ``[0, 1, 1, 0]`` — connected iff the states differ (XOR).

    References
    ----------
    Minsky, M. and Papert, S. (1969). *Perceptrons*, §0.8 and §5.1. MIT Press.

    Examples
    --------
    >>> minsky_papert_quadruple(16)[1].tolist()
    [0, 1, 1, 0]
    """
    _check_size(size)
    geometry = _random_geometry(size, np.random.default_rng(seed))
    states = [(0, 0), (0, 1), (1, 0), (1, 1)]
    images = np.stack([_draw(size, geometry, a, b) for a, b in states])
    return images, np.array([int(a != b) for a, b in states])


def connectivity_dataset(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary images labelled 1 iff the foreground is one 4-connected component.

    Each image is a random member of a :func:`minsky_papert_quadruple`: four
    rails whose two end switches decide connectivity. Exactly ``n // 2``
    images are disconnected and the rest connected; the left switch is a fair
    coin in both classes, so no single end tells the class.

    Parameters
    ----------
    n : int
        Number of images (≥ 2).
    size : int
        Side S of the square images (≥ 12).
    seed : int, default=0

    Returns
    -------
    images : ndarray of shape (n, S, S), uint8 in {0, 1}
    labels : ndarray of shape (n,), int in {0, 1}

    References
    ----------
    Minsky, M. and Papert, S. (1969). *Perceptrons*, §5.1. MIT Press.

    Examples
    --------
    >>> images, labels = connectivity_dataset(10, 16)
    >>> images.shape, int(labels.sum())
    ((10, 16, 16), 5)
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer of at least 2 (one image per class), got {n!r}.")
    _check_size(size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) >= n // 2).astype(int)
    left = rng.integers(0, 2, size=n)
    images = np.stack(
        [
            _draw(size, _random_geometry(size, rng), a, a ^ c)
            for a, c in zip(left, labels, strict=True)
        ]
    )
    return images, labels


# ----------------------------------------------------------------------------- the experiment
def local_pattern_counts(
    images: np.ndarray, k: int, vocabulary: np.ndarray | None = None
) -> tuple[sparse.csr_matrix, np.ndarray]:
    r"""How often each k×k binary pattern occurs in each image: features of support k².

    Every predicate that looks at one k×k window is a sum of indicators of
    the window's patterns, so a linear threshold on these counts is the most
    a translation-invariant perceptron of diameter k can do:

    .. math::

        \psi(X) = \Big[\sum_{p \in \{0,1\}^{k \times k}} \alpha_p \,
        \#\{\text{windows of } X \text{ equal to } p\} > \theta\Big].

    Parameters
    ----------
    images : ndarray of shape (N, S, S) in {0, 1}
    k : int
        Window side, 1 ≤ k ≤ min(S, 7) (a pattern is packed into a 64-bit code).
    vocabulary : ndarray of int64 codes, optional
        The patterns to count (from the training set); new patterns are ignored.

    Returns
    -------
    counts : sparse matrix of shape (N, len(vocabulary))
    vocabulary : ndarray of the pattern codes, sorted

    References
    ----------
    Minsky, M. and Papert, S. (1969). *Perceptrons*, §0.8 (diameter-limited perceptrons).

    Examples
    --------
    >>> counts, vocabulary = local_pattern_counts(np.array([[[1, 0], [0, 1]]]), k=1)
    >>> vocabulary.tolist(), counts.toarray().tolist()  # two 0-pixels, two 1-pixels
    ([0, 1], [[2.0, 2.0]])
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, S, S), got {images.shape}.")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= min(
        7, images.shape[1], images.shape[2]
    ):
        raise ValueError(
            f"k must be an integer window side in [1, min(7, S)], "
            f"got {k!r} for images {images.shape}."
        )
    # Code of the window at (r, c): bit i*k + j holds pixel (r + i, c + j).
    pixels = (images > 0).astype(np.int64)
    rows, cols = images.shape[1] - k + 1, images.shape[2] - k + 1
    codes = np.zeros((len(images), rows, cols), dtype=np.int64)
    for i, j in itertools.product(range(k), range(k)):
        codes |= pixels[:, i : i + rows, j : j + cols] << (i * k + j)
    codes = codes.reshape(len(images), -1)
    if vocabulary is None:
        vocabulary = np.unique(codes)
    column = np.searchsorted(vocabulary, codes).clip(0, len(vocabulary) - 1)
    known = vocabulary[column] == codes
    rows = np.broadcast_to(np.arange(len(images))[:, None], codes.shape)
    counts = sparse.coo_matrix(
        (np.ones(known.sum()), (rows[known], column[known])), shape=(len(images), len(vocabulary))
    ).tocsr()  # duplicates are summed
    return counts, vocabulary


def order_k_accuracy(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], k: int
) -> float:
    r"""Test accuracy of logistic regression on k×k pattern counts: a diameter-limited perceptron, fitted.

    .. math:: \hat y = \Big[\textstyle\sum_p \alpha_p\, c_p(X) > \theta\Big],
              \qquad c_p(X) = \#\{\text{windows of } X \text{ equal to } p\}

    Parameters
    ----------
    train, test : (images (N, S, S), labels (N,))
        As returned by :func:`connectivity_dataset`.
    k : int
        Window side.

    Examples
    --------
    >>> order_k_accuracy(connectivity_dataset(200, 12), connectivity_dataset(200, 12, seed=1), k=5) > 0.8
    True
    """
    X_train, vocabulary = local_pattern_counts(train[0], k)
    X_test, _ = local_pattern_counts(test[0], k, vocabulary)
    # Dividing each count by its largest training value keeps the model linear in
    # the counts (the class of order-k perceptrons) and the solver well conditioned.
    classifier = make_pipeline(MaxAbsScaler(), LogisticRegression(C=10.0, solver="liblinear"))
    classifier.fit(X_train, train[1])
    return float((classifier.predict(X_test) == test[1]).mean())


def _images(images: object) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, S, S), got {images.shape}; add a batch axis with images[None].")
    return images > 0


def _start_marker(images: np.ndarray) -> np.ndarray:
    """(N, S, S) bool: the first foreground pixel of each image in reading order (none for a blank image)."""
    flat = images.reshape(len(images), -1)
    marker = np.zeros_like(flat)
    marker[np.arange(len(flat)), flat.argmax(axis=1)] = flat.any(axis=1)
    return marker.reshape(images.shape)


def flood_fill(images: np.ndarray, steps: int) -> np.ndarray:
    r"""The marker of a recurrent network of 3×3 cells after ``steps`` steps: a flood fill.

    A marker starts at the first foreground pixel (in reading order) and each
    step spreads it to the 4-neighbours that are foreground,

    .. math::

        m^{(t+1)} = X \odot \big[\,(K * m^{(t)}) > 0\,\big], \qquad
        K = \begin{pmatrix} 0&1&0\\ 1&1&1\\ 0&1&0 \end{pmatrix},

    the same convolution at every step (a recurrent CNN). After t steps a
    pixel's marker depends on pixels up to t away: its receptive field grows
    with depth. Run long enough, the marker is the start pixel's piece of the figure.

    Parameters
    ----------
    images : ndarray of shape (N, S, S) in {0, 1}
    steps : int ≥ 0
        Steps to run (it stops early once the marker no longer changes).

    Returns
    -------
    marker : ndarray of shape (N, S, S), bool

    References
    ----------
    Minsky, M. and Papert, S. (1969). *Perceptrons*, §13 (connectedness by a
    serial, iterative machine).

    Examples
    --------
    >>> two_pieces = np.array([[[1, 1, 0, 1]]])
    >>> flood_fill(two_pieces, steps=5).astype(int).tolist()
    [[[1, 1, 0, 0]]]
    """
    images = _images(images)
    steps = core.check_int(steps, "steps", minimum=0)
    marker = _start_marker(images)
    for _ in range(steps):
        grown = marker.copy()
        grown[:, 1:] |= marker[:, :-1]
        grown[:, :-1] |= marker[:, 1:]
        grown[:, :, 1:] |= marker[:, :, :-1]
        grown[:, :, :-1] |= marker[:, :, 1:]
        grown &= images
        if (grown == marker).all():
            break
        marker = grown
    return marker


def propagate_connectivity(images: np.ndarray, steps: int) -> np.ndarray:
    """Connected or not, by the flood fill: 1 iff after ``steps`` steps the marker covers the figure.

    Parameters
    ----------
    images : ndarray of shape (N, S, S) in {0, 1}
    steps : int ≥ 0

    Returns
    -------
    predictions : ndarray of shape (N,), int — 1 for "connected"

    Examples
    --------
    >>> propagate_connectivity(np.array([[[1, 1, 0, 1]], [[1, 1, 1, 1]]]), steps=5).tolist()
    [0, 1]
    """
    images = _images(images)
    return (flood_fill(images, steps) == images).all(axis=(1, 2)).astype(int)


def connectivity_experiment(
    sizes: Sequence[int],
    ks: Sequence[int],
    n_train: int,
    n_test: int,
    steps: Sequence[int] = (),
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """Accuracy against image size of diameter-limited perceptrons and of the flood fill.

    Returns ``{"k=3": {size: accuracy}, ..., "flood fill": {size: accuracy}}``;
    the flood fill runs S² steps (enough for any path). Each ``t`` in ``steps``
    adds a curve ``"flood fill, t steps"``: a recurrent network of fixed depth.

    Examples
    --------
    >>> connectivity_experiment([12], ks=[3], n_train=40, n_test=40)["flood fill"]
    {12: 1.0}
    """
    results: dict[str, dict[int, float]] = {f"k={k}": {} for k in ks}
    results["flood fill"] = {}
    results.update({f"flood fill, {t} steps": {} for t in steps})
    for size in sizes:
        train = connectivity_dataset(n_train, size, seed=seed)
        test = connectivity_dataset(n_test, size, seed=seed + 1)
        for k in ks:
            results[f"k={k}"][size] = order_k_accuracy(train, test, k)
        for t in (size * size, *steps):
            name = "flood fill" if t == size * size else f"flood fill, {t} steps"
            results[name][size] = float((propagate_connectivity(test[0], t) == test[1]).mean())
    return results


# ----------------------------------------------------------------------------- learned networks
def connectivity_tensors(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    """The connectivity images as a torch data set: x of shape (N, 2, S, S) — the image and its start pixel.

    Channel 0 is the figure, channel 1 marks its first foreground pixel (where
    :func:`flood_fill` starts), as the Pathfinder task marks its end points.
    Labels become a long tensor of shape (N,).

    Examples
    --------
    >>> data = connectivity_tensors(*connectivity_dataset(4, 12))
    >>> tuple(data.tensors[0].shape), data.tensors[1].tolist()
    ((4, 2, 12, 12), [1, 0, 0, 1])
    """
    images = _images(images)
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), one per image, got {labels.shape}.")
    x = np.stack([images, _start_marker(images)], axis=1).astype(np.float32)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64)))


class FixedDepthCNN(nn.Module):
    """A small CNN of fixed depth: ``stages`` of two 3×3 conv–ReLU layers (2×2 max-pooling between
    stages), global average pooling and a linear read-out.

    With two stages every unit of ``features`` sees a 14×14 window
    (``core.receptive_field(net, "features", channels=2)``), whatever the image
    size. The read-out adds up what the windows report, so when no window sees
    both switches of a :func:`minsky_papert_quadruple`, the logit margins obey
    Minsky and Papert's identity f(0,0) + f(1,1) = f(0,1) + f(1,0).

    Named modules: ``features`` (``features.0`` … convolutions, ReLUs, pooling),
    ``pool``, ``flatten``, ``classifier``. Input (B, 2, S, S) from
    :func:`connectivity_tensors`; output (B, 2) logits.

    Examples
    --------
    >>> core.receptive_field(FixedDepthCNN(), "features", channels=2)
    {'size': 14, 'stride': 2}
    """

    def __init__(self, width: int = 16, stages: int = 2) -> None:
        super().__init__()
        width, stages = core.check_int(width, "width"), core.check_int(stages, "stages")
        layers: list[nn.Module] = []
        for stage in range(stages):
            if stage:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(2 if stage == 0 else width, width, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def propagation_step(marker: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    r"""One step of the recurrent network: the marker enters a pixel as far as the pixel's gate lets it.

    .. math::

        m^{(t+1)} = \max\big(m^{(t)},\ \min\big(g,\ \max_{q \in N(p)} m^{(t)}_q\big)\big)

    with :math:`N(p)` the pixel and its 4 neighbours (a 3×1 and a 1×3 max-pooling).
    With :math:`g = 1` on the figure and 0 elsewhere this is one step of
    :func:`flood_fill`; in general :math:`m_p` becomes the best "weakest gate" of a
    path from the start, which does not fade with the path's length.

    Parameters
    ----------
    marker, gate : Tensor (B, 1, S, S)
        Values in [0, 1].

    Returns
    -------
    Tensor (B, 1, S, S)

    Examples
    --------
    >>> m = torch.tensor([[[[1.0, 0.0, 0.0]]]]); g = torch.tensor([[[[1.0, 0.9, 0.2]]]])
    >>> propagation_step(propagation_step(m, g), g)
    tensor([[[[1.0000, 0.9000, 0.2000]]]])
    """
    neighbours = torch.maximum(F.max_pool2d(marker, (3, 1), stride=1, padding=(1, 0)),
                               F.max_pool2d(marker, (1, 3), stride=1, padding=(0, 1)))
    return torch.maximum(marker, torch.minimum(gate, neighbours))


class _Propagation(nn.Module):
    """``steps_per_side × S`` applications of :func:`propagation_step`: one module, so hooks see its output."""

    def __init__(self, steps_per_side: int) -> None:
        super().__init__()
        self.steps_per_side = steps_per_side

    def forward(self, gate: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        marker = start
        for _ in range(self.steps_per_side * gate.shape[-1]):
            marker = propagation_step(marker, gate)
        return marker


class RecurrentFill(nn.Module):
    r"""A recurrent network whose receptive field grows with the image: a learned gate, then
    :func:`propagation_step` repeated ``steps_per_side × S`` times from the start pixel.

    The gate :math:`g = \sigma(\text{1×1 conv of the image})` is learned: which pixels
    the marker may enter. The same step is applied again and again (shared
    weights), so after T steps a unit sees ``2T + 1`` pixels
    (``core.receptive_field(net, "propagate", channels=2, size=S)``). The figure is
    called connected when its least-reached pixel has a marker above ½: output
    logits ``(1 − c, c)`` with c that marker.

    Named modules: ``gate`` (the 1×1 convolution), ``propagate``. Input
    (B, 2, S, S) from :func:`connectivity_tensors`.

    Examples
    --------
    >>> net = RecurrentFill()
    >>> core.receptive_field(net, "propagate", channels=2, size=12)
    {'size': 73, 'stride': 1}
    """

    def __init__(self, steps_per_side: int = 3) -> None:
        super().__init__()
        self.gate = nn.Conv2d(1, 1, 1)
        self.propagate = _Propagation(core.check_int(steps_per_side, "steps_per_side"))

    def marker(self, x: torch.Tensor) -> torch.Tensor:
        """The marker after the last step, shape (B, 1, S, S)."""
        image, start = x[:, :1], x[:, 1:]
        return self.propagate(torch.sigmoid(self.gate(image)), start)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read_out(self.marker(x), x)

    @staticmethod
    def read_out(marker: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits (1 − c, c), c the smallest marker on the figure."""
        covered = torch.where(x[:, :1] > 0, marker, torch.ones_like(marker)).amin(dim=(1, 2, 3))
        return torch.stack([1 - covered, covered], dim=1)


def piece_loss(model: RecurrentFill, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The training loss of :class:`RecurrentFill`: per pixel of the figure, is it in the start pixel's piece?

    .. math:: J = -\frac{1}{|X|}\sum_{p \in X} \big[t_p \log m_p + (1 - t_p)\log(1 - m_p)\big]

    with :math:`t_p = 1` iff :func:`flood_fill` run to the end reaches p. The
    image's label is the special case "every t_p = 1"; the pixels give the network
    an answer at every place, not one per image. Returns ``(loss, logits)`` as
    :func:`core.train` expects.

    Examples
    --------
    >>> x, y = connectivity_tensors(*connectivity_dataset(4, 12)).tensors
    >>> loss, logits = piece_loss(RecurrentFill(), x, y)
    >>> loss.ndim, tuple(logits.shape)
    (0, (4, 2))
    """
    images = x[:, 0].detach().cpu().numpy()
    target = torch.from_numpy(flood_fill(images, steps=images.shape[-1] ** 2)).to(x)[:, None]
    marker = model.marker(x)
    on = x[:, :1] > 0
    loss = F.binary_cross_entropy(marker[on].clamp(1e-6, 1 - 1e-6), target[on])
    return loss, model.read_out(marker, x)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting.

    These networks are tiny (16 channels, 1-channel recurrences): a second
    thread only adds synchronisation, and on a busy machine its spinning costs
    several times the work itself.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_NETWORKS = {  # kind: (class, loss, Adam's learning rate, batch size)
    "fixed": (FixedDepthCNN, core.cross_entropy_step, 3e-3, 16),
    "recurrent": (RecurrentFill, piece_loss, 0.3, 32),
}


def connectivity_network(
    kind: str, size: int, n_train: int, epochs: int, seed: int = 0, train: bool = True, progress: bool = True
) -> nn.Module:
    """A :class:`FixedDepthCNN` (``"fixed"``) or :class:`RecurrentFill` (``"recurrent"``) trained on connectivity.

    Trained with :func:`core.train` (Adam) on ``n_train`` images of
    side ``size`` from :func:`connectivity_dataset` — the fixed CNN on the labels
    (cross-entropy), the recurrent network with :func:`piece_loss` — and cached by
    :func:`core.cached_model`. With ``train=False``: the same architecture with
    its seeded random weights, the control.

    Examples
    --------
    >>> net = connectivity_network("fixed", size=12, n_train=64, epochs=1, progress=False)
    >>> net.arch, tuple(net(torch.zeros(1, 2, 12, 12)).shape)
    ('connectivity_fixed', (1, 2))
    """
    if kind not in _NETWORKS:
        raise ValueError(f"Unknown network kind {kind!r}; expected one of {sorted(_NETWORKS)}.")
    network, loss_fn, lr, batch_size = _NETWORKS[kind]
    size, n_train, epochs = _check_size(size), core.check_int(n_train, "n_train", 2), core.check_int(epochs, "epochs")

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return network()

    def fit(model: nn.Module) -> None:
        data = connectivity_tensors(*connectivity_dataset(n_train, size, seed=seed))
        with _one_thread():
            core.train(model, data, epochs=epochs, lr=lr, batch_size=batch_size, loss_fn=loss_fn, seed=seed,
                       progress=progress, desc=f"{kind} network, S={size}")

    if not train:
        return build().to(config.device()).eval()
    settings = {"size": size, "n_train": n_train, "epochs": epochs, "seed": seed, "lr": lr, "batch_size": batch_size}
    return core.cached_model(f"connectivity_{kind}", settings, build, fit)


def learned_connectivity_experiment(
    sizes: Sequence[int], n_train: int, n_test: int, epochs: int, seed: int = 0, progress: bool = True
) -> dict[str, dict]:
    """Accuracy against image size of a fixed-depth CNN (trained at each size) and of the recurrent network
    (trained once, at the smallest size), with their receptive fields and random-weight controls.

    Returns
    -------
    dict
        ``{"accuracy": {name: {size: acc}}, "receptive_field": {name: {size: pixels}},
        "control": {name: acc of the untrained network at the smallest size}}`` with
        names ``"fixed-depth CNN"`` and ``"recurrent network"``.

    Examples
    --------
    >>> out = learned_connectivity_experiment([12], 64, 64, epochs=1, progress=False)
    >>> out["receptive_field"]
    {'fixed-depth CNN': {12: 14}, 'recurrent network': {12: 73}}
    """
    sizes = [_check_size(s) for s in sizes]
    names = {"fixed": "fixed-depth CNN", "recurrent": "recurrent network"}
    out: dict[str, dict] = {key: {name: {} for name in names.values()} for key in ("accuracy", "receptive_field")}
    smallest = min(sizes)
    recurrent = connectivity_network("recurrent", smallest, n_train, epochs, seed, progress=progress)
    tests = {s: connectivity_tensors(*connectivity_dataset(n_test, s, seed=seed + 1)) for s in sizes}
    out["control"] = {names[kind]: core.accuracy(connectivity_network(kind, smallest, n_train, epochs, seed,
                                                                      train=False), tests[smallest])
                      for kind in names}
    for size in sizes:
        fixed = connectivity_network("fixed", size, n_train, epochs, seed, progress=progress)
        for kind, model, layer in (("fixed", fixed, "features"), ("recurrent", recurrent, "propagate")):
            with _one_thread():
                out["accuracy"][names[kind]][size] = core.accuracy(model, tests[size])
            out["receptive_field"][names[kind]][size] = core.receptive_field(model, layer, 2, size)["size"]
    return out


def quadruple_margins(model: nn.Module, size: int, seed: int = 0) -> np.ndarray:
    """Logit margins f = logit(connected) − logit(two pieces) of a network on one Minsky–Papert quadruple.

    Returns f for the switch states (0, 0), (0, 1), (1, 0), (1, 1). A network that
    adds up what windows report (:class:`FixedDepthCNN`) has
    f(0,0) + f(1,1) − f(0,1) − f(1,0) = 0 when no window sees both switches, so at
    least one of the four figures is misclassified.

    Examples
    --------
    >>> f = quadruple_margins(FixedDepthCNN(), size=40)
    >>> bool(abs(f[0] + f[3] - f[1] - f[2]) < 1e-5)
    True
    """
    images, labels = minsky_papert_quadruple(size, seed=seed)
    x, _ = connectivity_tensors(images, labels).tensors
    with torch.no_grad(), core.restoring(core.check_model(model)):
        logits = model.eval()(x.to(core.model_device(model))).double().cpu()
    return (logits[:, 1] - logits[:, 0]).numpy()


# --------------------------------------------------------------- figures (this chapter only)
def plot_decision_boundary(
    predict_score,
    X: np.ndarray,
    y: np.ndarray,
    ax: plt.Axes | None = None,
    title: str | None = None,
    resolution: int = 200,
) -> Figure:
    """Shade a score in [0, 1] over the input plane, draw its ½ level and the points (X, y).

    ``predict_score`` maps an (M, 2) array of points to M scores in [0, 1]
    (e.g. ``lambda P: mlp.forward(P)[:, 0]``); the contour at ½ is the decision boundary.

    Examples
    --------
    >>> X, y = logic_dataset("and")
    >>> fig = plot_decision_boundary(lambda P: (P.sum(axis=1) > 1.5).astype(float), X, y, title="AND")
    >>> fig.axes[0].get_title()
    'AND'
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.4))
    grid = np.linspace(-0.25, 1.25, resolution)
    xx, yy = np.meshgrid(grid, grid)
    scores = np.asarray(predict_score(np.column_stack([xx.ravel(), yy.ravel()]))).reshape(xx.shape)
    ax.contourf(
        xx, yy, scores, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.75, vmin=0, vmax=1
    )
    if scores.min() < 0.5 < scores.max():
        ax.contour(xx, yy, scores, levels=[0.5], colors="k", linewidths=1.5)
    for label, marker in ((0, "o"), (1, "s")):
        rows = np.asarray(y) == label
        ax.scatter(
            X[rows, 0],
            X[rows, 1],
            marker=marker,
            s=90,
            c="white",
            edgecolors="k",
            linewidths=1.5,
            label=f"y = {label}",
            zorder=3,
        )
    ax.set(
        xlim=(-0.25, 1.25),
        ylim=(-0.25, 1.25),
        aspect="equal",
        xlabel="$x_1$",
        ylabel="$x_2$",
        title=title,
    )
    ax.legend(loc="upper center", fontsize=8, ncol=2, framealpha=0.9)
    return ax.figure


def plot_hidden_units(mlp: MLP, X: np.ndarray, y: np.ndarray) -> Figure:
    """Each first-layer hidden unit's activation over the input plane, then the output.

    Examples
    --------
    >>> len(plot_hidden_units(MLP([2, 3, 1]), *xor_dataset()).axes)  # three units and the output
    4
    """
    width = mlp.layer_sizes[1]
    fig, axes = plt.subplots(1, width + 1, figsize=(2.9 * (width + 1), 3.0))
    scale = {"sigmoid": (0, 1), "tanh": (-1, 1), "relu": None}[mlp.activation]
    for unit, ax in enumerate(axes[:-1]):

        def hidden(points, unit=unit):
            h = mlp.forward_all(points)[1][:, unit]
            lo, hi = scale if scale else (0.0, max(h.max(), 1e-9))
            return (h - lo) / (hi - lo)  # rescaled to [0, 1] for a common colour map

        plot_decision_boundary(hidden, X, y, ax=ax, title=f"hidden unit {unit + 1}")
    plot_decision_boundary(
        lambda points: mlp.forward(points)[:, 0], X, y, ax=axes[-1], title="output ŷ"
    )
    for ax in axes[1:]:
        ax.get_legend().remove()
    fig.tight_layout()
    return fig


def plot_connectivity_experiment(
    results: dict[str, dict[int, float]], ax: plt.Axes | None = None
) -> Figure:
    """Accuracy against image side for every model of :func:`connectivity_experiment`.

    Examples
    --------
    >>> plot_connectivity_experiment({"k=3": {12: 0.9, 24: 0.5}, "flood fill": {12: 1.0, 24: 1.0}}).axes[0].get_xlabel()
    'image side S (pixels)'
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7.6, 3.8))
    for name, curve in results.items():
        style = "-" if name == "flood fill" else ("--" if name.startswith("flood") else ":")
        ax.plot(list(curve), list(curve.values()), style, marker="o", label=name)
    ax.axhline(0.5, color="grey", lw=1)
    ax.text(ax.get_xlim()[0], 0.51, " chance", color="grey", fontsize=8, va="bottom")
    ax.set(
        xlabel="image side S (pixels)",
        ylabel="test accuracy",
        ylim=(0.3, 1.05),
        title="Connected or not? Local features vs propagation",
    )
    ax.grid(alpha=0.3)
    ax.set_xticks(list(next(iter(results.values()))))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.figure.tight_layout()
    return ax.figure


def plot_learned_connectivity(results: dict[str, dict], ax: plt.Axes | None = None) -> Figure:
    """Accuracy against image side of the networks of :func:`learned_connectivity_experiment`.

    Each curve's label gives the network's receptive field; the shaded band holds the
    image sides that fit in the fixed CNN's field, and crosses mark the untrained
    (random-weight) controls at the smallest side.

    Examples
    --------
    >>> fake = {"accuracy": {"fixed-depth CNN": {12: 1.0, 40: 0.5}, "recurrent network": {12: 1.0, 40: 1.0}},
    ...         "receptive_field": {"fixed-depth CNN": {12: 14, 40: 14}, "recurrent network": {12: 73, 40: 241}},
    ...         "control": {"fixed-depth CNN": 0.5, "recurrent network": 0.5}}
    >>> plot_learned_connectivity(fake).axes[0].get_ylabel()
    'test accuracy'
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8.4, 4.4))
    accuracy, fields = results["accuracy"], results["receptive_field"]
    sizes = sorted(next(iter(accuracy.values())))
    fixed_field = min(min(f.values()) for f in fields.values())
    ax.axvspan(sizes[0] - 1, fixed_field, color="C0", alpha=0.1, label="image fits in the CNN's receptive field")
    for (name, curve), marker, colour in zip(accuracy.items(), "os", ("C0", "C1"), strict=False):
        field = sorted(set(fields[name].values()))
        grows = f"{field[0]}–{field[-1]} px, grows with S" if len(field) > 1 else f"{field[0]} px"
        ax.plot(list(curve), list(curve.values()), marker=marker, color=colour, lw=2,
                label=f"{name}, trained (receptive field {grows})")
    for (name, acc), colour, shift in zip(results["control"].items(), ("C0", "C1"), (-0.25, 0.25), strict=False):
        ax.plot([sizes[0] + shift], [acc], "x", color=colour, ms=9, mew=2, label=f"{name}, random weights")
    ax.axhline(0.5, color="grey", lw=1)
    ax.text(sizes[-1], 0.51, "chance ", color="grey", fontsize=8, va="bottom", ha="right")
    ax.set(xlabel="image side S (pixels)", ylabel="test accuracy", ylim=(0.0, 1.05), xticks=sizes,
           xlim=(sizes[0] - 1, sizes[-1] + 1), title="Connected or not? Learned networks against image size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.95)
    ax.figure.tight_layout()
    return ax.figure


# ------------------------------------------------------------------------- Try it
def xor_playground_widget(
    hidden: int = 4, lr: float = 2.0, epochs: int = 2000, activation: str = "sigmoid", seed: int = 0
) -> ipywidgets.VBox:
    """XOR playground: train a [2, hidden, 1] :class:`MLP` by back-propagation and redraw its boundary.

    Controls: hidden units, learning rate, epochs, hidden activation and seed.
    The figure shows the output ŷ over the input plane with its ½ contour (the
    decision boundary) beside the loss curve. Training takes up to about a
    second, so the panel redraws when "Run" is pressed.

    Examples
    --------
    >>> panel = xor_playground_widget(hidden=2, epochs=100)
    Figure(840x350)
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; expected one of {_ACTIVATIONS}.")

    def draw(hidden: int, lr: float, epochs: int, activation: str, seed: int) -> Figure:
        X, y = xor_dataset()
        net = MLP([2, hidden, 1], activation=activation, seed=seed)
        losses = net.fit(X, y, lr=lr, epochs=epochs)
        accuracy = (net.predict(X) == y).mean()
        fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.5))
        plot_decision_boundary(lambda P: net.forward(P)[:, 0], X, y, ax=left,
                               title=f"{hidden} {activation} units: {accuracy:.0%} right")
        right.plot(losses)
        right.set(xlabel="epoch", ylabel="loss E = ½Σ(ŷ − y)²", yscale="log", title=f"learning rate {lr:g}")
        right.grid(alpha=0.3)
        fig.tight_layout()
        return fig

    return widgets.try_it(
        draw,
        run_button=True,
        hidden=ipywidgets.IntSlider(value=hidden, min=1, max=8, description="hidden units"),
        lr=ipywidgets.FloatLogSlider(value=lr, base=10, min=-2, max=1, step=0.1, description="learning rate"),
        epochs=ipywidgets.IntSlider(value=epochs, min=100, max=5000, step=100, description="epochs"),
        activation=ipywidgets.Dropdown(value=activation, options=list(_ACTIVATIONS), description="activation"),
        seed=ipywidgets.IntSlider(value=seed, min=0, max=9, description="seed"),
    )
