"""Chapter 2: the condition number of a manifold and persistent homology.

Shape letters: ``n`` points, ``d`` ambient dimension, ``k`` manifold
dimension, ``m`` points of a densely sampled closed curve (in order).

* samplers: :func:`sample_circle`, :func:`sample_ellipse`, :func:`sample_torus`,
  :func:`sample_sphere` (uniform with respect to the manifold's volume),
  :func:`landmarks` (greedy farthest-point subsampling); closed plane curves
  :func:`cassini_oval` (pinched towards self-contact as ``b → 1``),
  :func:`curve_length`, :func:`sample_curve`;
* the reach τ (1/τ is the condition number): :func:`reach_ellipse` in closed
  form, :func:`reach_federer` and :func:`local_feature_size` /
  :func:`medial_axis` numerically from a sampled curve;
* Niyogi–Smale–Weinberger: :func:`ball_volume`, :func:`nsw_sample_bound`,
  :func:`recovers_homology`, :func:`recovery_rate`, and :func:`pinch_experiment`
  (recovery as the reach shrinks at fixed length, ``n`` and ε);
* Vietoris–Rips persistence through ripser: :func:`persistence`, :func:`betti_numbers`;
* homology as linear algebra: :func:`rips_complex`, :func:`rips_simplex_count`,
  :func:`boundary_matrix`, :func:`betti_from_ranks`, :func:`combinatorial_laplacian`,
  and the simplices as basis states of a quantum register, :func:`basis_label`,
  :func:`simplex_state`;
* figures: :func:`plot_reach`, :func:`plot_pinch_experiment`, :func:`plot_barcode`,
  :func:`plot_persistence_diagram`, :func:`plot_rips_complex`, and the chapter's
  Try-it panel :func:`topology_widget`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Polygon
from matplotlib.path import Path
from persim import plot_diagrams
from ripser import ripser
from scipy.spatial import Voronoi, cKDTree
from scipy.spatial.distance import cdist
from scipy.special import ellipe

from . import core, widgets

__all__ = [
    "sample_circle",
    "sample_ellipse",
    "sample_torus",
    "sample_sphere",
    "landmarks",
    "cassini_oval",
    "curve_length",
    "sample_curve",
    "reach_ellipse",
    "ellipse_perimeter",
    "reach_federer",
    "medial_axis",
    "local_feature_size",
    "ball_volume",
    "nsw_sample_bound",
    "recovers_homology",
    "recovery_rate",
    "pinch_experiment",
    "persistence",
    "betti_numbers",
    "rips_complex",
    "rips_simplex_count",
    "boundary_matrix",
    "betti_from_ranks",
    "combinatorial_laplacian",
    "basis_label",
    "simplex_state",
    "plot_reach",
    "plot_pinch_experiment",
    "plot_barcode",
    "plot_persistence_diagram",
    "plot_rips_complex",
    "topology_widget",
]


# ----------------------------------------------------------------------------- validation
def _positive(value: object, name: str, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """A positive (or non-negative) real number, finite unless ``allow_inf``: core's rule plus finiteness."""
    value = core.check_number(value, name, low=0.0, low_open=not allow_zero)
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return value


def _points(X: object, name: str = "X", dim: int | None = None) -> np.ndarray:
    if not isinstance(X, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be an (n, d) array of points, got {type(X).__name__}.")
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(
            f"{name} must be an (n, d) array of points with n, d >= 1, got shape {X.shape}; "
            "reshape a single point to (1, d)."
        )
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (points in R^{dim}), got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite coordinates; remove those points first.")
    return X


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else core.check_int(seed, "seed", minimum=0))


def _with_noise(X: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    noise = _positive(noise, "noise", allow_zero=True)
    return X + noise * rng.standard_normal(X.shape)


# ----------------------------------------------------------------------------- samplers
def sample_circle(n: int, radius: float = 1.0, noise: float = 0.0, seed: int | None = None) -> np.ndarray:
    """``n`` i.i.d. uniform points on the circle of radius ``radius``, plus Gaussian noise.

    Returns
    -------
    ndarray, shape (n, 2)

    Examples
    --------
    >>> X = sample_circle(4, radius=2.0, seed=0)
    >>> X.shape, np.allclose(np.linalg.norm(X, axis=1), 2.0)
    ((4, 2), True)
    """
    n, radius, rng = core.check_int(n, "n"), _positive(radius, "radius"), _rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    return _with_noise(radius * np.column_stack([np.cos(angle), np.sin(angle)]), noise, rng)


def _rejection(weight_fn, upper: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` angles in [0, 2π) with density proportional to ``weight_fn`` (≤ ``upper``)."""
    kept = np.empty(0)
    while kept.size < n:
        t = rng.uniform(0, 2 * np.pi, 2 * n)
        kept = np.concatenate([kept, t[rng.uniform(0, upper, t.size) < weight_fn(t)]])
    return kept[:n]


def sample_ellipse(n: int, a: float, b: float, noise: float = 0.0, seed: int | None = None) -> np.ndarray:
    r"""``n`` points uniform in arc length on the ellipse $x^2/a^2 + y^2/b^2 = 1$, plus noise.

    The parameter $t$ of $(a\cos t, b\sin t)$ is drawn with density proportional to
    the speed $\sqrt{a^2\sin^2 t + b^2\cos^2 t}$ (rejection sampling), so that the
    points are uniform with respect to length, as Niyogi–Smale–Weinberger assume.

    Returns
    -------
    ndarray, shape (n, 2)

    Examples
    --------
    >>> x, y = sample_ellipse(5, 2.0, 1.0, seed=0).T
    >>> np.allclose((x / 2) ** 2 + y**2, 1.0)
    True
    """
    n, a, b, rng = core.check_int(n, "n"), _positive(a, "a"), _positive(b, "b"), _rng(seed)
    t = _rejection(lambda t: np.hypot(a * np.sin(t), b * np.cos(t)), max(a, b), n, rng)
    return _with_noise(np.column_stack([a * np.cos(t), b * np.sin(t)]), noise, rng)


def sample_torus(n: int, R: float = 2.0, r: float = 1.0, noise: float = 0.0, seed: int | None = None) -> np.ndarray:
    r"""``n`` points uniform in area on the torus with radii ``R`` > ``r`` in $\mathbb{R}^3$, plus noise.

    The area element is $r(R + r\cos v)\,du\,dv$, so the tube angle $v$ is drawn
    with density proportional to $R + r\cos v$ (rejection sampling). Gaussian
    noise of standard deviation ``noise`` is added to every coordinate.

    Returns
    -------
    ndarray, shape (n, 3)

    Examples
    --------
    >>> x, y, z = sample_torus(5, seed=0).T
    >>> np.allclose((np.hypot(x, y) - 2.0) ** 2 + z**2, 1.0)
    True
    """
    n, R, r, rng = core.check_int(n, "n"), _positive(R, "R"), _positive(r, "r"), _rng(seed)
    if r >= R:
        raise ValueError(f"The tube radius r={r} must be smaller than R={R} for an embedded torus.")
    u = rng.uniform(0, 2 * np.pi, n)
    v = _rejection(lambda v: R + r * np.cos(v), R + r, n, rng)
    ring = R + r * np.cos(v)
    return _with_noise(np.column_stack([ring * np.cos(u), ring * np.sin(u), r * np.sin(v)]), noise, rng)


def sample_sphere(n: int, dim: int = 2, noise: float = 0.0, seed: int | None = None) -> np.ndarray:
    r"""``n`` uniform points on the unit sphere $S^{dim} \subset \mathbb{R}^{dim+1}$, plus noise.

    A standard Gaussian vector divided by its norm is uniform on the sphere
    (the Gaussian is rotation invariant).

    Returns
    -------
    ndarray, shape (n, dim + 1)

    Examples
    --------
    >>> np.allclose(np.linalg.norm(sample_sphere(5, dim=3, seed=0), axis=1), 1.0)
    True
    """
    n, dim, rng = core.check_int(n, "n"), core.check_int(dim, "dim"), _rng(seed)
    g = rng.standard_normal((n, dim + 1))
    return _with_noise(g / np.linalg.norm(g, axis=1, keepdims=True), noise, rng)


def landmarks(X: np.ndarray, m: int) -> np.ndarray:
    """Greedy farthest-point subsample: ``m`` rows of ``X`` that cover it evenly.

    Each new landmark is the point farthest from those already chosen (the
    "maxmin" rule), a cheap way to keep Rips persistence in dimension 2 fast.

    Returns
    -------
    ndarray, shape (m, d)

    Examples
    --------
    >>> landmarks(np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0]]), 2).tolist()
    [[0.0, 0.0], [5.0, 0.0]]
    """
    X = _points(X)
    m = core.check_int(m, "m")
    if m > len(X):
        raise ValueError(f"Cannot choose m={m} landmarks from {len(X)} points; use m <= {len(X)}.")
    chosen, dist = [0], np.linalg.norm(X - X[0], axis=1)
    for _ in range(m - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(X - X[chosen[-1]], axis=1))
    return X[chosen]


# ----------------------------------------------------------------------------- closed curves
def _closed_curve(curve: object, name: str = "curve") -> np.ndarray:
    curve = _points(curve, name, dim=2)
    if len(curve) < 8:
        raise ValueError(f"{name} needs at least 8 ordered points of a closed curve, got {len(curve)}.")
    return curve


def _arc_lengths(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closed polyline (first point repeated at the end) and the arc length at each of its vertices."""
    closed = np.vstack([curve, curve[:1]])
    steps = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    return closed, np.concatenate([[0.0], np.cumsum(steps)])


def _points_at(curve: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points of the closed polyline ``curve`` at arc lengths ``s`` (linear interpolation)."""
    closed, length = _arc_lengths(curve)
    return np.column_stack([np.interp(s, length, closed[:, i]) for i in range(closed.shape[1])])


def curve_length(curve: np.ndarray) -> float:
    """Length of the closed polyline through the ordered points ``curve`` (m, 2), last joined to first.

    Examples
    --------
    >>> round(curve_length(np.array([[0, 0], [1, 0], [1, 1], [0, 1]] * 2)), 6)  # a square, twice round
    8.0
    """
    return float(_arc_lengths(_points(curve, "curve", dim=2))[1][-1])


def cassini_oval(b: float, m: int = 1000, length: float | None = None) -> np.ndarray:
    r"""``m`` points, equally spaced in arc length, of the Cassini oval with foci $(\pm 1, 0)$.

    .. math:: \big((x-1)^2 + y^2\big)\big((x+1)^2 + y^2\big) = b^4,
              \qquad r^2 = \cos 2\theta + \sqrt{\cos^2 2\theta + b^4 - 1}

    For $b > 1$ it is one closed curve with a *waist* of half-width $\sqrt{b^2 - 1}$
    on the $y$-axis; as $b \to 1$ the waist closes and the curve approaches the
    lemniscate of Bernoulli, which touches itself at the origin. Near that limit
    the reach is the waist's half-width (a bottleneck), so the family is a road
    towards an ill-posed manifold at (with ``length``) fixed volume.

    Parameters
    ----------
    b : float
        Product of the distances to the foci is $b^2$; must exceed 1.
    m : int, default=1000
        Number of points returned (≥ 8).
    length : float, optional
        Rescale the curve to this total length (its "volume"); by default it is not rescaled.

    Returns
    -------
    ndarray, shape (m, 2)
        Ordered points; the last is followed by the first.

    References
    ----------
    Niyogi, Smale and Weinberger (2008), §6 (a curve's condition number is large when
    it nearly touches itself).

    Examples
    --------
    >>> oval = cassini_oval(1.1, m=400)
    >>> round(float(np.abs(oval[np.abs(oval[:, 0]) < 1e-2, 1]).min()), 3)  # waist: sqrt(1.1**2 - 1)
    0.458
    >>> round(curve_length(cassini_oval(1.1, length=2 * np.pi)), 6)
    6.283185
    """
    b = _positive(b, "b")
    if b <= 1:
        raise ValueError(f"b must exceed 1 for a single closed Cassini oval (b = 1 is the self-touching "
                         f"lemniscate, b < 1 two ovals), got b={b:g}.")
    m = core.check_int(m, "m", minimum=8)
    theta = np.linspace(0, 2 * np.pi, 16 * m, endpoint=False)  # dense in angle, then even in length
    c2 = np.cos(2 * theta)
    r = np.sqrt(c2 + np.sqrt(c2**2 + b**4 - 1))
    dense = np.column_stack([r * np.cos(theta), r * np.sin(theta)])
    total = _arc_lengths(dense)[1][-1]
    curve = _points_at(dense, np.linspace(0, total, m, endpoint=False))
    return curve if length is None else curve * (_positive(length, "length") / curve_length(curve))


def sample_curve(curve: np.ndarray, n: int, noise: float = 0.0, seed: int | None = None) -> np.ndarray:
    """``n`` i.i.d. points uniform in arc length on the closed polyline ``curve``, plus Gaussian noise.

    Parameters
    ----------
    curve : ndarray, shape (m, 2)
        Ordered points of a closed curve (e.g. :func:`cassini_oval`).
    n : int
    noise : float, default=0
    seed : int, optional

    Returns
    -------
    ndarray, shape (n, 2)

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 500, endpoint=False)
    >>> X = sample_curve(np.column_stack([np.cos(t), np.sin(t)]), 3, seed=0)
    >>> np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-4)
    True
    """
    curve = _closed_curve(curve)
    n, rng = core.check_int(n, "n"), _rng(seed)
    s = rng.uniform(0, curve_length(curve), n)
    return _with_noise(_points_at(curve, s), noise, rng)


# ----------------------------------------------------------------------------- reach
def reach_ellipse(a: float, b: float) -> float:
    r"""Reach of the ellipse with semi-axes ``a`` ≥ ``b``: $\tau = b^2 / a$.

    .. math:: \tau = \min_p \operatorname{lfs}(p) = \rho_{\min} = \frac{b^2}{a}

    The medial axis is the segment $|x| \le a - b^2/a$ on the major axis; its end
    point is the centre of curvature of the vertex $(a, 0)$, whose radius of
    curvature $b^2/a$ is the smallest on the curve. The axes may be given in either
    order; ``a == b`` gives the circle, $\tau = r$.

    References
    ----------
    Federer, "Curvature measures", Trans. AMS 93 (1959); Niyogi, Smale and
    Weinberger (2008), Section 6.

    Examples
    --------
    >>> reach_ellipse(2.0, 1.0)
    0.5
    """
    a, b = _positive(a, "a"), _positive(b, "b")
    a, b = max(a, b), min(a, b)
    return b * b / a


def ellipse_perimeter(a: float, b: float) -> float:
    r"""Length of the ellipse with semi-axes ``a``, ``b``: $4a\,E(1 - b^2/a^2)$ for $a \ge b$.

    $E(m) = \int_0^{\pi/2}\sqrt{1 - m\sin^2\phi}\,d\phi$ is the complete elliptic integral
    of the second kind (``scipy.special.ellipe``); ``a == b`` gives $2\pi r$.

    Examples
    --------
    >>> round(ellipse_perimeter(1.0, 1.0), 6)
    6.283185
    """
    a, b = _positive(a, "a"), _positive(b, "b")
    a, b = max(a, b), min(a, b)
    return float(4 * a * ellipe(1 - (b / a) ** 2))


def reach_federer(curve: np.ndarray) -> float:
    r"""Numerical reach of a densely sampled closed plane curve, by Federer's formula.

    .. math:: \tau = \inf_{p \ne q \in M} \frac{\|q - p\|^2}{2\, d(q - p, T_p M)}

    where $d(v, T_pM) = \|v - (v\cdot t_p)\,t_p\|$ is the distance of $v$ from the
    tangent line. Neighbouring pairs recover the radius of curvature (for them the
    ratio tends to $1/\kappa$); distant pairs detect narrow "bottlenecks". Tangents
    are central differences of the ordered samples.

    Parameters
    ----------
    curve : ndarray, shape (m, 2)
        Points of a closed curve in order along it (the last joins the first).

    References
    ----------
    Federer (1959), Theorem 4.18; Niyogi, Smale and Weinberger (2008).

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    >>> round(reach_federer(np.column_stack([2 * np.cos(t), np.sin(t)])), 3)
    0.5
    """
    curve = _closed_curve(curve)
    tangent = np.roll(curve, -1, axis=0) - np.roll(curve, 1, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    diff = curve[None, :, :] - curve[:, None, :]  # diff[i, j] = q_j - p_i
    along = np.einsum("ijd,id->ij", diff, tangent)
    normal = np.sqrt(np.maximum((diff**2).sum(-1) - along**2, 0.0))
    ratio = (diff**2).sum(-1) / (2 * np.maximum(normal, 1e-300))
    np.fill_diagonal(ratio, np.inf)
    return float(ratio.min())


def medial_axis(curve: np.ndarray) -> np.ndarray:
    """Interior medial axis of a closed plane curve, from the Voronoi diagram of its samples.

    For a dense sample of a smooth curve, the Voronoi vertices converge to the
    medial axis (Amenta, Bern and Eppstein 1998): the points with two or more
    nearest points on the curve. Only vertices inside the curve are kept.

    Returns
    -------
    ndarray, shape (v, 2)
        Voronoi vertices inside the curve.

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    >>> axis = medial_axis(np.column_stack([2 * np.cos(t), np.sin(t)]))
    >>> round(float(np.abs(axis[:, 0]).max()), 1)  # the segment |x| <= a - b**2 / a = 1.5
    1.5
    """
    curve = _closed_curve(curve)
    vertices = Voronoi(curve).vertices
    return vertices[Path(curve).contains_points(vertices)]


def local_feature_size(curve: np.ndarray) -> np.ndarray:
    r"""Local feature size $\operatorname{lfs}(p) = d(p, \text{medial axis})$ at every sample.

    The reach is its infimum, $\tau = \inf_p \operatorname{lfs}(p)$; here the
    medial axis is :func:`medial_axis` (inside the curve; for the convex curves of
    the chapter the outer medial axis is empty).

    Returns
    -------
    ndarray, shape (m,)

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    >>> round(float(local_feature_size(np.column_stack([2 * np.cos(t), np.sin(t)])).min()), 3)
    0.5
    """
    curve = _closed_curve(curve)
    axis = medial_axis(curve)
    if len(axis) == 0:
        raise ValueError("No Voronoi vertex lies inside the curve; give more, ordered samples.")
    return cKDTree(axis).query(curve)[0]


# ------------------------------------------------------------------- Niyogi–Smale–Weinberger
def ball_volume(k: int, radius: float) -> float:
    r"""Volume of the k-dimensional ball of radius r.

    .. math:: \operatorname{vol}(B^k_r) = \frac{\pi^{k/2} r^k}{\Gamma(k/2 + 1)}

    Examples
    --------
    >>> round(ball_volume(2, 1.0), 6)
    3.141593
    """
    k, radius = core.check_int(k, "k"), _positive(radius, "radius")
    return math.pi ** (k / 2) * radius**k / math.gamma(k / 2 + 1)


def nsw_sample_bound(volume: float, k: int, tau: float, eps: float, delta: float) -> float:
    r"""Sample size of Niyogi–Smale–Weinberger, Theorem 3.1.

    If $n$ points are drawn i.i.d. uniformly from a compact $k$-manifold $M$ of
    reach $\tau$, $\varepsilon < \tau/2$ and

    .. math::

        n > \beta_1\left(\log \beta_2 + \log\frac{1}{\delta}\right),\quad
        \beta_1 = \frac{\operatorname{vol}(M)}
                       {\cos^k\theta_1\,\operatorname{vol}(B^k_{\varepsilon/4})},\quad
        \beta_2 = \frac{\operatorname{vol}(M)}
                       {\cos^k\theta_2\,\operatorname{vol}(B^k_{\varepsilon/8})},

    with $\theta_1 = \arcsin(\varepsilon/8\tau)$ and $\theta_2 = \arcsin(\varepsilon/16\tau)$,
    then with probability $> 1 - \delta$ the union of the $\varepsilon$-balls around
    the points deformation-retracts onto $M$ (so has the homology of $M$).

    Parameters
    ----------
    volume : float
        $\operatorname{vol}(M)$ (length of a curve, area of a surface).
    k : int
        Dimension of $M$.
    tau : float
        Reach of $M$ (the condition number is $1/\tau$).
    eps : float
        Radius of the balls, $0 < \varepsilon < \tau/2$.
    delta : float
        Allowed failure probability, in (0, 1).

    Returns
    -------
    float
        The right-hand side $\beta_1(\log\beta_2 + \log 1/\delta)$.

    References
    ----------
    Niyogi, Smale and Weinberger, "Finding the homology of submanifolds with high
    confidence from random samples", Discrete Comput. Geom. 39 (2008), Thm 3.1.

    Examples
    --------
    >>> round(nsw_sample_bound(2 * np.pi, 1, 1.0, 0.2, 0.05))
    492
    """
    volume, k, tau = _positive(volume, "volume"), core.check_int(k, "k"), _positive(tau, "tau")
    eps, delta = _positive(eps, "eps"), _positive(delta, "delta")
    if eps >= tau / 2:
        raise ValueError(f"Theorem 3.1 needs eps < tau/2 = {tau / 2:g}, got eps={eps:g}; choose a smaller eps.")
    if delta >= 1:
        raise ValueError(f"delta is a failure probability in (0, 1), got {delta:g}.")
    cos1, cos2 = math.cos(math.asin(eps / (8 * tau))), math.cos(math.asin(eps / (16 * tau)))
    beta1 = volume / (cos1**k * ball_volume(k, eps / 4))
    beta2 = volume / (cos2**k * ball_volume(k, eps / 8))
    return beta1 * (math.log(beta2) + math.log(1 / delta))


def recovers_homology(X: np.ndarray, eps: float, betti: list[int]) -> bool:
    r"""Whether the Rips complex of ``X`` at scale $2\varepsilon$ has the Betti numbers ``betti``.

    Two $\varepsilon$-balls meet exactly when their centres are within $2\varepsilon$,
    so the Rips complex at $2\varepsilon$ has the same graph as the nerve of the
    union of $\varepsilon$-balls (the Čech complex); for points on a curve of reach
    $\tau > 2\varepsilon$ both are circles as soon as the balls cover the curve.

    Examples
    --------
    >>> recovers_homology(sample_circle(200, seed=0), 0.2, [1, 1])
    True
    """
    betti = list(betti)
    eps = _positive(eps, "eps")
    if not betti:
        raise ValueError("betti must list the expected Betti numbers, e.g. [1, 1] for a circle.")
    diagrams = persistence(X, maxdim=len(betti) - 1, thresh=2 * eps * (1 + 1e-9))
    return betti_numbers(diagrams, 2 * eps) == betti


def recovery_rate(curve: np.ndarray, n: int, eps: float, betti: list[int], trials: int, seed: int = 0) -> float:
    r"""Fraction of ``trials`` samples of ``n`` points of ``curve`` whose ε-balls have Betti numbers ``betti``.

    .. math:: \hat P = \frac{1}{T}\sum_{t=1}^{T}
              \big[\,\beta(\text{Rips}_{2\varepsilon}(\bar x^{(t)})) = \beta(M)\,\big],
              \qquad \bar x^{(t)} \sim \text{uniform}(M)^n

    Each sample is drawn by :func:`sample_curve` (seeds ``seed``, ``seed + 1``, ...)
    and judged by :func:`recovers_homology`.

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    >>> recovery_rate(np.column_stack([np.cos(t), np.sin(t)]), 200, 0.2, [1, 1], trials=3)
    1.0
    """
    trials, seed = core.check_int(trials, "trials"), core.check_int(seed, "seed", minimum=0)
    return float(np.mean([recovers_homology(sample_curve(curve, n, seed=seed + t), eps, betti)
                          for t in range(trials)]))


def pinch_experiment(
    bs: Sequence[float],
    n: int,
    eps: float,
    trials: int,
    length: float = 2 * np.pi,
    delta: float = 0.05,
    m: int = 400,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    r"""Recovery of a closed curve's homology as its reach shrinks at fixed length, ``n`` and ε.

    For each ``b`` the :func:`cassini_oval` of length ``length`` is drawn with ``m``
    points; its reach τ is measured by :func:`reach_federer`, and ``trials``
    samples of ``n`` points are judged by :func:`recovery_rate` (Betti numbers
    (1, 1) of the Rips complex at $2\varepsilon$). The Niyogi–Smale–Weinberger
    bound (:func:`nsw_sample_bound`) is evaluated where it applies, $\varepsilon < \tau/2$.

    Returns
    -------
    dict of ndarray, one entry per ``b``
        ``"b"``, ``"tau"``, ``"eps_over_tau"``, ``"success"`` (the empirical
        probability) and ``"nsw_bound"`` (NaN where $\varepsilon \ge \tau/2$).

    Examples
    --------
    >>> out = pinch_experiment([2.0, 1.01], n=300, eps=0.2, trials=2, progress=False)
    >>> out["eps_over_tau"].round(2).tolist(), out["success"].tolist()
    ([0.27, 1.61], [1.0, 0.0])
    """
    n, eps, length = core.check_int(n, "n"), _positive(eps, "eps"), _positive(length, "length")
    rows = []
    for b in core.progress_bar(bs, progress=progress, desc="reach"):
        curve = cassini_oval(b, m=m, length=length)
        tau = reach_federer(curve)
        bound = nsw_sample_bound(length, 1, tau, eps, delta) if eps < tau / 2 else np.nan
        rows.append((b, tau, eps / tau, recovery_rate(curve, n, eps, [1, 1], trials), bound))
    columns = np.array(rows, dtype=float).T
    return dict(zip(["b", "tau", "eps_over_tau", "success", "nsw_bound"], columns, strict=True))


# ----------------------------------------------------------------------------- persistence
def persistence(X: np.ndarray, maxdim: int = 1, thresh: float = np.inf) -> list[np.ndarray]:
    r"""Vietoris–Rips persistence diagrams of a Euclidean point cloud (ripser).

    The Rips complex at scale $\varepsilon$ holds every simplex whose vertices are
    pairwise within distance $\varepsilon$ (ripser's convention: an edge appears at
    the scale *equal* to its length). Each bar $[b, d)$ is a homology class born at
    scale $b$ and dead at scale $d$.

    Parameters
    ----------
    X : ndarray, shape (n, d)
    maxdim : int, default=1
        Highest homology dimension computed (2 costs far more than 1).
    thresh : float, default=inf
        Largest scale built; bars alive there get death ``inf``.

    Returns
    -------
    list of ndarray, one of shape (k_j, 2) for each dimension j = 0..maxdim
        Rows (birth, death).

    References
    ----------
    Tralie, Saul and Bar-On, "Ripser.py", JOSS 3 (2018); Bauer, "Ripser" (2021).

    Examples
    --------
    >>> [len(d) for d in persistence(np.array([[0, 0], [3, 0], [0, 4]]), maxdim=0)]
    [3]
    """
    X = _points(X)
    maxdim = core.check_int(maxdim, "maxdim", minimum=0)
    thresh = _positive(thresh, "thresh", allow_inf=True)
    if math.isinf(thresh):
        return ripser(X, maxdim=maxdim)["dgms"]
    # Below a finite threshold only nearby pairs matter: a sparse distance matrix
    # (missing entries = "no edge", missing diagonal = births at 0) saves the n^2 matrix.
    tree = cKDTree(X)
    sparse = tree.sparse_distance_matrix(tree, thresh, output_type="coo_matrix")
    return ripser(sparse, maxdim=maxdim, distance_matrix=True)["dgms"]


def _diagram(dgm: object, j: int) -> np.ndarray:
    dgm = np.asarray(dgm, dtype=float)
    dgm = dgm.reshape(-1, 2) if dgm.size == 0 else dgm
    if dgm.ndim != 2 or dgm.shape[1] != 2:
        raise ValueError(f"Diagram {j} must have shape (k, 2) of (birth, death) rows, got {dgm.shape}.")
    return dgm


def _diagrams(diagrams: object) -> list[np.ndarray]:
    if not isinstance(diagrams, (list, tuple)) or not diagrams:
        raise TypeError(f"diagrams must be a non-empty list of (k, 2) arrays as returned by persistence(), "
                        f"got {type(diagrams).__name__}.")
    return [_diagram(dgm, j) for j, dgm in enumerate(diagrams)]


def betti_numbers(diagrams: list[np.ndarray], eps: float) -> list[int]:
    r"""Betti numbers of the Rips complex at scale ``eps``, read off persistence diagrams.

    .. math:: \beta_j(\varepsilon) = \#\{[b, d) \in \mathrm{Dgm}_j : b \le \varepsilon < d\}

    Returns
    -------
    list of int, one per diagram (dimension 0, 1, ...)

    Examples
    --------
    >>> betti_numbers(persistence(np.array([[0, 0], [3, 0], [0, 4]]), maxdim=0), 3.5)
    [2]
    """
    diagrams, eps = _diagrams(diagrams), core.check_number(eps, "eps", low=-math.inf)
    return [int(np.sum((dgm[:, 0] <= eps) & (eps < dgm[:, 1]))) for dgm in diagrams]


# ----------------------------------------------------------------------------- homology as linear algebra
def rips_complex(X: np.ndarray, eps: float, maxdim: int) -> list[list[tuple[int, ...]]]:
    r"""The simplices of the Vietoris–Rips complex at scale ``eps``, dimension by dimension.

    .. math:: \mathrm{Rips}_\varepsilon(X) = \{\sigma \subseteq X :
              \|x_i - x_j\| \le \varepsilon \text{ for all } x_i, x_j \in \sigma\}

    A $k$-simplex is a $(k+1)$-clique of the $\varepsilon$-graph. Cliques are grown
    one vertex at a time, each new vertex a common neighbour with a larger index,
    so each simplex is listed once, as a tuple of increasing vertex indices, and
    each dimension's list is in lexicographic order.

    Parameters
    ----------
    X : ndarray, shape (n, d)
    eps : float
        Scale (≥ 0; ``inf`` gives every subset).
    maxdim : int
        Highest dimension listed.

    Returns
    -------
    list of lists of tuples, length maxdim + 1
        ``complex[k]`` holds the k-simplices.

    Examples
    --------
    >>> rips_complex(np.array([[0, 0], [3, 0], [0, 4]]), eps=4.5, maxdim=2)
    [[(0,), (1,), (2,)], [(0, 1), (0, 2)], []]
    """
    X, eps = _points(X), _positive(eps, "eps", allow_zero=True, allow_inf=True)
    maxdim = core.check_int(maxdim, "maxdim", minimum=0)
    upper = np.triu(cdist(X, X) <= eps, k=1)  # neighbours with a larger index
    level = [((i,), np.flatnonzero(upper[i])) for i in range(len(X))]  # (simplex, vertices that extend it)
    simplices = [[simplex for simplex, _ in level]]
    for _ in range(maxdim):
        level = [(simplex + (int(v),), grow[upper[v, grow]]) for simplex, grow in level for v in grow]
        simplices.append([simplex for simplex, _ in level])
    return simplices


def rips_simplex_count(X: np.ndarray, eps: float, maxdim: int) -> list[int]:
    r"""Number of $k$-simplices of the Rips complex at scale ``eps``, for $k = 0..$``maxdim``.

    The lengths of :func:`rips_complex`'s lists. When ``eps`` exceeds the diameter
    every subset is a simplex: $\sum_k \binom{n}{k+1} = 2^n - 1$ — the curse of
    dimensionality.

    Returns
    -------
    list of int, length maxdim + 1

    Examples
    --------
    >>> rips_simplex_count(np.eye(4), eps=2.0, maxdim=3)
    [4, 6, 4, 1]
    """
    return [len(level) for level in rips_complex(X, eps, maxdim)]


def _simplices(simplices: object, name: str) -> list[tuple[int, ...]]:
    if not isinstance(simplices, (list, tuple)):
        raise TypeError(f"{name} must be a list of vertex tuples such as [(0, 1), (0, 2)], "
                        f"got {type(simplices).__name__}.")
    out = [tuple(int(v) for v in s) if isinstance(s, (tuple, list)) else s for s in simplices]
    for s in out:
        if not isinstance(s, tuple) or not s or any(a >= b for a, b in zip(s, s[1:], strict=False)):
            raise ValueError(f"Each simplex in {name} must be a non-empty tuple of strictly increasing vertex "
                             f"indices, got {s!r}; sort it, e.g. tuple(sorted(s)).")
    if len({len(s) for s in out}) > 1:
        raise ValueError(f"All simplices in {name} must have the same dimension, got sizes "
                         f"{sorted({len(s) for s in out})}.")
    return out


def boundary_matrix(simplices: Sequence[tuple[int, ...]], faces: Sequence[tuple[int, ...]]) -> np.ndarray:
    r"""The boundary operator $\partial_k$ as a matrix: rows ``faces`` ($(k-1)$-simplices), columns ``simplices``.

    .. math:: \partial_k [v_0, \dots, v_k] = \sum_{i=0}^{k} (-1)^i\, [v_0, \dots, \hat v_i, \dots, v_k]

    Entry $(r, c)$ is $(-1)^i$ when ``faces[r]`` is ``simplices[c]`` with its $i$-th
    vertex left out, and 0 otherwise. Since $\partial_{k-1}\partial_k = 0$, the
    image of $\partial_{k+1}$ lies in the kernel of $\partial_k$; homology is their quotient.

    Parameters
    ----------
    simplices : list of tuples
        The $k$-simplices, each a tuple of $k+1$ increasing vertex indices.
    faces : list of tuples
        The $(k-1)$-simplices; every face of every simplex must be among them.

    Returns
    -------
    ndarray, shape (len(faces), len(simplices))
        Entries in {-1, 0, 1}.

    References
    ----------
    Lloyd, Garnerone and Zanardi, "Quantum algorithms for topological and geometric
    analysis of data", Nat. Commun. 7 (2016), eq. (1).

    Examples
    --------
    >>> boundary_matrix([(0, 1, 2)], [(0, 1), (0, 2), (1, 2)]).ravel().tolist()
    [1.0, -1.0, 1.0]
    """
    simplices, faces = _simplices(simplices, "simplices"), _simplices(faces, "faces")
    if simplices and faces and len(faces[0]) != len(simplices[0]) - 1:
        raise ValueError(f"faces must have one vertex less than simplices, got {len(faces[0])} and "
                         f"{len(simplices[0])} vertices.")
    row = {face: r for r, face in enumerate(faces)}
    matrix = np.zeros((len(faces), len(simplices)))
    for c, simplex in enumerate(simplices):
        for i in range(len(simplex) if len(simplex) > 1 else 0):  # a vertex has no faces: ∂_0 = 0
            face = simplex[:i] + simplex[i + 1:]
            if face not in row:
                raise ValueError(f"The face {face} of {simplex} is missing from faces: not a simplicial complex.")
            matrix[row[face], c] = (-1) ** i
    return matrix


def _boundaries(complex_: Sequence[Sequence[tuple[int, ...]]]) -> list[np.ndarray]:
    """``[∂_0, ∂_1, ..., ∂_{K+1}]`` of a complex with levels 0..K (∂_0 and ∂_{K+1} are empty)."""
    if not isinstance(complex_, (list, tuple)) or not complex_:
        raise TypeError("complex must be a non-empty list of simplex lists, one per dimension "
                        "(e.g. rips_complex(X, eps, maxdim)).")
    sizes = [len(level) for level in complex_]
    inner = [boundary_matrix(complex_[k], complex_[k - 1]) for k in range(1, len(complex_))]
    return [np.zeros((0, sizes[0])), *inner, np.zeros((sizes[-1], 0))]


def betti_from_ranks(complex_: Sequence[Sequence[tuple[int, ...]]]) -> list[int]:
    r"""Betti numbers of a simplicial complex from the ranks of its boundary matrices.

    .. math:: \beta_k = \dim\ker\partial_k - \operatorname{rank}\partial_{k+1}
              = n_k - \operatorname{rank}\partial_k - \operatorname{rank}\partial_{k+1}

    ($n_k$ the number of $k$-simplices, ranks over the reals). The top level given
    has no $\partial_{K+1}$: for a Rips complex listed up to dimension $K$ (e.g.
    ``rips_complex(X, eps, maxdim=K)``), only $\beta_0..\beta_{K-1}$ are those of the
    full complex.

    Parameters
    ----------
    complex_ : list of lists of tuples
        ``complex_[k]`` holds the k-simplices, every face of each among ``complex_[k-1]``.

    Returns
    -------
    list of int, one per level

    References
    ----------
    Lloyd, Garnerone and Zanardi (2016); Edelsbrunner and Harer, *Computational
    Topology* (2010), §IV.

    Examples
    --------
    >>> hollow_triangle = [[(0,), (1,), (2,)], [(0, 1), (0, 2), (1, 2)]]
    >>> betti_from_ranks(hollow_triangle)
    [1, 1]
    >>> betti_from_ranks(hollow_triangle + [[(0, 1, 2)]])
    [1, 0, 0]
    """
    boundaries = _boundaries(complex_)
    ranks = [int(np.linalg.matrix_rank(d)) if d.size else 0 for d in boundaries]
    return [len(complex_[k]) - ranks[k] - ranks[k + 1] for k in range(len(complex_))]


def combinatorial_laplacian(complex_: Sequence[Sequence[tuple[int, ...]]], k: int) -> np.ndarray:
    r"""The combinatorial Laplacian $\Delta_k$ on the $k$-simplices of a complex.

    .. math:: \Delta_k = \partial_k^\top \partial_k + \partial_{k+1}\partial_{k+1}^\top,
              \qquad \beta_k = \dim\ker\Delta_k

    (Hodge theory: a $k$-chain is in the kernel iff it is a cycle orthogonal to every
    boundary.) Lloyd, Garnerone and Zanardi estimate $\beta_k$ on a quantum computer
    by phase estimation of $\Delta_k$: eigenvalue 0 appears with probability
    $\beta_k / n_k$ in the uniform mixture of the $k$-simplex states.

    Parameters
    ----------
    complex_ : list of lists of tuples
        As for :func:`betti_from_ranks`.
    k : int
        Dimension, ``0 <= k < len(complex_)``.

    Returns
    -------
    ndarray, shape (n_k, n_k)
        Symmetric, positive semi-definite, in the basis ``complex_[k]``.

    References
    ----------
    Lloyd, Garnerone and Zanardi (2016), eq. (2).

    Examples
    --------
    >>> combinatorial_laplacian([[(0,), (1,), (2,)], [(0, 1), (0, 2)]], k=1).tolist()
    [[2.0, 1.0], [1.0, 2.0]]
    """
    boundaries = _boundaries(complex_)
    k = core.check_int(k, "k", minimum=0, maximum=len(complex_) - 1)
    down, up = boundaries[k], boundaries[k + 1]
    return down.T @ down + up @ up.T


def basis_label(simplex: tuple[int, ...], n: int) -> str:
    """The n-qubit basis state of a simplex on n points, as a bit string: bit i is 1 iff vertex i is in it.

    Vertex 0 is the leftmost qubit, so on three points the edge (0, 1) is
    ``|110⟩`` and the triangle ``|111⟩`` (Huang et al.'s notation).

    Examples
    --------
    >>> basis_label((0, 2), 3)
    '101'
    """
    n = core.check_int(n, "n")
    (simplex,) = _simplices([simplex], "simplex")
    if simplex[-1] >= n:
        raise ValueError(f"Vertex {simplex[-1]} does not exist on n={n} points (vertices are 0..{n - 1}).")
    return "".join("1" if i in simplex else "0" for i in range(n))


def simplex_state(simplices: Sequence[tuple[int, ...]], n: int) -> np.ndarray:
    r"""The uniform superposition of the simplices' basis states in an n-qubit register.

    .. math:: |\psi_k\rangle = \frac{1}{\sqrt{|S_k|}} \sum_{\sigma \in S_k} |\sigma\rangle

    Basis state $|b_0 b_1 \dots b_{n-1}\rangle$ (:func:`basis_label`) has index
    $\sum_i b_i 2^{n-1-i}$. The register holds $2^n$ amplitudes: one per subset of
    the $n$ points, so every simplex that can ever appear has its own basis state.

    Returns
    -------
    ndarray, shape (2**n,)
        Real amplitudes, unit norm.

    References
    ----------
    Lloyd, Garnerone and Zanardi (2016); Huang et al., "Demonstration of topological
    data analysis on a quantum processor", Optica 5 (2018).

    Examples
    --------
    >>> psi = simplex_state([(0, 1), (0, 2)], 3)   # (|110> + |101>) / sqrt(2)
    >>> np.flatnonzero(psi).tolist(), round(float(psi[6]), 4)
    ([5, 6], 0.7071)
    """
    labels = [basis_label(s, n) for s in _simplices(simplices, "simplices")]
    if not labels:
        raise ValueError("simplices is empty: there is no state to prepare.")
    state = np.zeros(2**n)
    state[[int(label, 2) for label in labels]] = 1.0 / math.sqrt(len(labels))
    return state


# --------------------------------------------------------------------------- figures
def plot_reach(curve: np.ndarray, ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """A closed curve coloured by its local feature size, with its Voronoi medial axis (black dots).

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    >>> plot_reach(np.column_stack([2 * np.cos(t), np.sin(t)])).axes[0].get_aspect()
    1.0
    """
    curve = _closed_curve(curve)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    axis, lfs = medial_axis(curve), local_feature_size(curve)
    ax.plot(*axis.T, "k.", ms=2, label="medial axis (Voronoi)")
    points = ax.scatter(*curve.T, c=lfs, s=6, cmap="viridis")
    ax.figure.colorbar(points, ax=ax, shrink=0.7, label="local feature size")
    ax.set(aspect="equal", title=title)
    return ax.figure


def plot_pinch_experiment(
    results: dict[str, np.ndarray], n: int, eps: float, length: float = 2 * np.pi, delta: float = 0.05
) -> Figure:
    """Three panels: the curves of :func:`pinch_experiment`, P(recover) against ε/τ, and the NSW bound.

    ``n``, ``eps``, ``length`` and ``delta`` are those the experiment ran with.

    Examples
    --------
    >>> fake = {"b": np.array([2.0, 1.01]), "tau": np.array([0.74, 0.12]), "eps_over_tau": np.array([0.27, 1.6]),
    ...         "success": np.array([1.0, 0.0]), "nsw_bound": np.array([492.0, np.nan])}
    >>> [ax.get_title() for ax in plot_pinch_experiment(fake, n=500, eps=0.2).axes[1:3]]
    ["Recovering the oval's homology", 'The NSW bound (none for ε ≥ τ/2)']
    """
    fig, (shapes, recovery, bound) = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    taus = results["tau"]
    colours = plt.cm.ScalarMappable(plt.Normalize(taus.min(), taus.max()), cmap="viridis")
    for b, tau in zip(results["b"], taus, strict=True):
        shapes.plot(*cassini_oval(b, m=400, length=length).T, color=colours.to_rgba(tau), lw=1.2)
    fig.colorbar(colours, ax=shapes, shrink=0.8, label="reach τ")
    shapes.set(aspect="equal", title=f"Cassini ovals of length {length:.3g}", xticks=[], yticks=[])
    ratio, success = results["eps_over_tau"], results["success"]
    limits = (ratio.min() / 1.15, ratio.max() * 1.15)
    for ax in (recovery, bound):
        ax.axvspan(limits[0], 0.5, color="C2", alpha=0.12, label="ε < τ/2: the theorem applies")
        ax.axvline(1.0, color="C3", ls="--", lw=1, label="ε = τ: the ε-balls bridge the waist")
        ax.set(xscale="log", xlim=limits, xlabel="ε / τ   (ε fixed; the reach τ shrinks →)")
        ax.set_xticks([t for t in (0.25, 0.5, 1, 2) if limits[0] <= t <= limits[1]])
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.grid(alpha=0.3)
    recovery.plot(ratio, success, "o-", color="k", label=f"empirical: n = {n}, ε = {eps:g}")
    recovery.axhline(1 - delta, color="grey", ls=":", lw=1, label=f"1 − δ = {1 - delta:g}")
    recovery.set(ylabel="P(Betti numbers = (1, 1))", ylim=(-0.05, 1.05), title="Recovering the oval's homology")
    recovery.legend(fontsize=7, loc="lower left")
    bound.plot(ratio, results["nsw_bound"], "s-", color="C0", label="NSW bound: n needed")
    bound.axhline(n, color="k", lw=1, label=f"n used = {n}")
    bound.set(ylabel="samples n", ylim=(0, 1.3 * max(n, np.nanmax(results["nsw_bound"]))),
              title="The NSW bound (none for ε ≥ τ/2)")
    bound.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_barcode(
    diagrams: Sequence[np.ndarray],
    eps: float | None = None,
    ax: plt.Axes | None = None,
    title: str | None = "barcode",
    min_length: float = 0.0,
) -> Figure:
    """Persistence barcode: one horizontal bar [birth, death) per homology class.

    Bars are grouped by dimension (H0 at the top, in colour order C0, C1, ...);
    infinite bars end in an arrow at the right edge. With ``eps``, a vertical line
    marks the scale: the bars it crosses are the Betti numbers at ``eps``.

    Parameters
    ----------
    diagrams : list of (k, 2) arrays
        As returned by :func:`persistence`.
    eps : float, optional
        Scale to mark.
    ax : matplotlib Axes, optional
    title : str, optional
    min_length : float, default=0
        Hide bars shorter than this (noise), to keep long barcodes readable.

    Examples
    --------
    >>> fig = plot_barcode([np.array([[0.0, 1.0], [0.0, np.inf]]), np.array([[0.5, 2.0]])], eps=0.7)
    >>> len(fig.axes[0].collections)  # one set of bars per dimension
    2
    """
    diagrams = _diagrams(diagrams)
    finite = [d[np.isfinite(d[:, 1]), 1] for d in diagrams]
    right = 1.1 * max([f.max() for f in finite if f.size] + [eps or 0.0, 1e-9])
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    row = 0
    for dim, dgm in enumerate(diagrams):
        dgm = dgm[dgm[:, 1] - dgm[:, 0] > min_length]
        dgm = dgm[np.lexsort((-dgm[:, 1], dgm[:, 0]))]  # by birth, longest first
        rows = row + np.arange(len(dgm))
        ax.hlines(rows, dgm[:, 0], np.minimum(dgm[:, 1], right), color=f"C{dim}", lw=2, label=f"$H_{dim}$")
        endless = ~np.isfinite(dgm[:, 1])
        ax.plot(np.full(endless.sum(), right), rows[endless], ">", color=f"C{dim}", ms=5)
        row += len(dgm)
    if eps is not None:
        ax.axvline(eps, color="k", ls="--", lw=1)
    ax.set(xlim=(0, right * 1.02), xlabel="scale ε", yticks=[], title=title)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def plot_persistence_diagram(
    diagrams: Sequence[np.ndarray], ax: plt.Axes | None = None, title: str | None = "persistence diagram"
) -> Figure:
    """Persistence diagram (persim): one point (birth, death) per class.

    Points far from the diagonal are persistent features; points near it are noise.

    Examples
    --------
    >>> plot_persistence_diagram([np.array([[0.0, 1.0], [0.0, np.inf]])]).axes[0].get_title()
    'persistence diagram'
    """
    diagrams = _diagrams(diagrams)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.8, 3.8))
    plot_diagrams(diagrams, ax=ax, show=False)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def plot_rips_complex(
    X: np.ndarray, eps: float, ax: plt.Axes | None = None, labels: bool = False, balls: bool = True
) -> Figure:
    """Balls of radius ε/2, Rips edges and triangles at scale ε over plane points X (n, 2).

    Two balls of radius ε/2 meet exactly when their centres are within ε, the
    scale at which ripser adds the edge. With ``labels``, each point is numbered
    and each edge carries its basis state (:func:`basis_label`), e.g. ``|110⟩``.

    Examples
    --------
    >>> fig = plot_rips_complex(np.array([[0, 0], [3, 0], [0, 4]]), eps=4.5, labels=True)
    >>> fig.axes[0].get_title()
    'Rips complex at ε = 4.50: 2 edges, 0 triangles'
    """
    X = _points(X, dim=2)
    _, edges, triangles = rips_complex(X, eps, maxdim=2)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    if balls:
        ax.add_collection(PatchCollection([Circle(p, eps / 2) for p in X], color="C0", alpha=0.12, lw=0))
    ax.add_collection(PatchCollection([Polygon(X[list(t)]) for t in triangles], color="C1", alpha=0.3, lw=0))
    ax.add_collection(LineCollection([X[list(e)] for e in edges], color="k", lw=1.0))
    ax.plot(*X.T, "ko", ms=4 if len(X) > 10 else 7)
    if labels:  # vertex numbers pushed away from the centre; edges named by their basis state
        centre = X.mean(axis=0)
        for i, p in enumerate(X):
            away = (p - centre) / max(np.linalg.norm(p - centre), 1e-12)
            ax.annotate(str(i), p, textcoords="offset points", xytext=tuple(14 * away), fontsize=11,
                        ha="center", va="center", weight="bold")
        for e in edges:
            ax.annotate(f"|{basis_label(e, len(X))}⟩", X[list(e)].mean(0), fontsize=10, color="C3", ha="center",
                        va="center", bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.85})
        ax.set_axis_off()
        ax.margins(0.15)
    ax.set_aspect("equal")
    ax.set_title(f"Rips complex at ε = {eps:.2f}: {len(edges)} edges, {len(triangles)} triangles", fontsize=9)
    ax.autoscale_view()
    return ax.figure


# ------------------------------------------------------------------------- Try it
def topology_widget(X: np.ndarray | None = None, eps: float | None = None, maxdim: int = 1) -> ipywidgets.VBox:
    """ε slider over plane points: ε/2-balls, Rips edges and triangles, barcode and Betti numbers.

    The picture on the left is the union of balls and the Rips complex at the
    same ε as the dashed line of the barcode on the right.

    Parameters
    ----------
    X : (n, 2) array, optional
        Points (default: 30 noisy samples of the unit circle).
    eps : float, optional
        Initial scale (default: a quarter into the longest H1 bar, else 0.5).
    maxdim : int, default=1
        Highest homology dimension of the barcode.

    Examples
    --------
    >>> panel = topology_widget(sample_circle(12, noise=0.05, seed=0))
    Figure(1000x420)
    """
    X = sample_circle(30, noise=0.08, seed=0) if X is None else _points(X, dim=2)
    diagrams = persistence(X, maxdim=core.check_int(maxdim, "maxdim", minimum=0))
    top = 1.2 * max(float(d[np.isfinite(d[:, 1]), 1].max(initial=0.0)) for d in diagrams)
    if eps is None:
        h1 = diagrams[1] if maxdim >= 1 and len(diagrams[1]) else np.array([[0.5, 0.5]])
        birth, death = h1[np.argmax(h1[:, 1] - h1[:, 0])]
        eps = float(birth + 0.25 * (death - birth))  # early in the longest loop's life

    def draw(eps: float) -> Figure:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
        plot_rips_complex(X, eps, ax=left)
        names = ", ".join(f"β{j} = {b}" for j, b in enumerate(betti_numbers(diagrams, eps)))
        plot_barcode(diagrams, eps=eps, ax=right, title=f"Betti numbers at ε: {names}")
        fig.tight_layout()
        return fig

    slider = ipywidgets.FloatSlider(value=round(eps, 2), min=0.0, max=round(max(top, eps), 2), step=0.01,
                                    description="ε", continuous_update=False)
    return widgets.try_it(draw, eps=slider)
