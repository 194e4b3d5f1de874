"""Chapter 2: the condition number of a manifold and persistent homology.

Shape letters: ``n`` points, ``d`` ambient dimension, ``k`` manifold
dimension, ``m`` points of a densely sampled closed curve (in order).

* samplers: :func:`sample_circle`, :func:`sample_ellipse`, :func:`sample_torus`,
  :func:`sample_sphere` (uniform with respect to the manifold's volume), and
  :func:`landmarks` (greedy farthest-point subsampling);
* the reach τ (1/τ is the condition number): :func:`reach_ellipse` in closed
  form, :func:`reach_federer` and :func:`local_feature_size` /
  :func:`medial_axis` numerically from a sampled curve;
* Niyogi–Smale–Weinberger: :func:`ball_volume`, :func:`nsw_sample_bound`,
  :func:`recovers_homology`;
* Vietoris–Rips persistence through ripser: :func:`persistence`,
  :func:`betti_numbers`, and :func:`rips_simplex_count`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from numbers import Real

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Polygon
from matplotlib.path import Path
from scipy.spatial import Voronoi, cKDTree
from scipy.spatial.distance import cdist

from . import widgets

__all__ = [
    "sample_circle",
    "sample_ellipse",
    "sample_torus",
    "sample_sphere",
    "landmarks",
    "reach_ellipse",
    "ellipse_perimeter",
    "reach_federer",
    "medial_axis",
    "local_feature_size",
    "ball_volume",
    "nsw_sample_bound",
    "persistence",
    "betti_numbers",
    "recovers_homology",
    "rips_simplex_count",
]


# ----------------------------------------------------------------------------- validation
def _count(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def _positive(value: object, name: str, allow_zero: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}.")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not ok or math.isnan(value) or (math.isinf(value) and not allow_inf):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"{name} must be a {kind}{'' if allow_inf else ' finite'} number, got {value}."
        )
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
        raise ValueError(
            f"{name} must have {dim} columns (points in R^{dim}), got shape {X.shape}."
        )
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite coordinates; remove those points first.")
    return X


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else _count(seed, "seed", minimum=0))


def _with_noise(X: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    noise = _positive(noise, "noise", allow_zero=True)
    return X + noise * rng.standard_normal(X.shape)


# ----------------------------------------------------------------------------- samplers
def sample_circle(
    n: int, radius: float = 1.0, noise: float = 0.0, seed: int | None = None
) -> np.ndarray:
    """``n`` i.i.d. uniform points on the circle of radius ``radius``, plus Gaussian noise.

    Returns
    -------
    ndarray, shape (n, 2)

    Example
    -------
    >>> sample_circle(4, radius=2.0, seed=0).shape
    (4, 2)
    """
    n, radius, rng = _count(n, "n"), _positive(radius, "radius"), _rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    return _with_noise(radius * np.column_stack([np.cos(angle), np.sin(angle)]), noise, rng)


def _rejection(weight_fn, upper: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` angles in [0, 2π) with density proportional to ``weight_fn`` (≤ ``upper``)."""
    kept = np.empty(0)
    while kept.size < n:
        t = rng.uniform(0, 2 * np.pi, 2 * n)
        kept = np.concatenate([kept, t[rng.uniform(0, upper, t.size) < weight_fn(t)]])
    return kept[:n]


def sample_ellipse(
    n: int, a: float, b: float, noise: float = 0.0, seed: int | None = None
) -> np.ndarray:
    r"""``n`` points uniform in arc length on the ellipse $x^2/a^2 + y^2/b^2 = 1$, plus noise.

    The parameter $t$ of $(a\cos t, b\sin t)$ is drawn with density proportional to
    the speed $\sqrt{a^2\sin^2 t + b^2\cos^2 t}$ (rejection sampling), so that the
    points are uniform with respect to length, as Niyogi–Smale–Weinberger assume.

    Returns
    -------
    ndarray, shape (n, 2)
    """
    n, a, b, rng = _count(n, "n"), _positive(a, "a"), _positive(b, "b"), _rng(seed)
    t = _rejection(lambda t: np.hypot(a * np.sin(t), b * np.cos(t)), max(a, b), n, rng)
    return _with_noise(np.column_stack([a * np.cos(t), b * np.sin(t)]), noise, rng)


def sample_torus(
    n: int, R: float = 2.0, r: float = 1.0, noise: float = 0.0, seed: int | None = None
) -> np.ndarray:
    r"""``n`` points uniform in area on the torus with radii ``R`` > ``r`` in $\mathbb{R}^3$.

    Gaussian noise of standard deviation ``noise`` is added to every coordinate.

    The area element is $r(R + r\cos v)\,du\,dv$, so the tube angle $v$ is drawn
    with density proportional to $R + r\cos v$ (rejection sampling).

    Returns
    -------
    ndarray, shape (n, 3)
    """
    n, R, r, rng = _count(n, "n"), _positive(R, "R"), _positive(r, "r"), _rng(seed)
    if r >= R:
        raise ValueError(f"The tube radius r={r} must be smaller than R={R} for an embedded torus.")
    u = rng.uniform(0, 2 * np.pi, n)
    v = _rejection(lambda v: R + r * np.cos(v), R + r, n, rng)
    ring = R + r * np.cos(v)
    return _with_noise(
        np.column_stack([ring * np.cos(u), ring * np.sin(u), r * np.sin(v)]), noise, rng
    )


def sample_sphere(n: int, dim: int = 2, noise: float = 0.0, seed: int | None = None) -> np.ndarray:
    r"""``n`` uniform points on the unit sphere $S^{dim} \subset \mathbb{R}^{dim+1}$, plus noise.

    A standard Gaussian vector divided by its norm is uniform on the sphere
    (the Gaussian is rotation invariant).

    Returns
    -------
    ndarray, shape (n, dim + 1)
    """
    n, dim, rng = _count(n, "n"), _count(dim, "dim"), _rng(seed)
    g = rng.standard_normal((n, dim + 1))
    return _with_noise(g / np.linalg.norm(g, axis=1, keepdims=True), noise, rng)


def landmarks(X: np.ndarray, m: int) -> np.ndarray:
    """Greedy farthest-point subsample: ``m`` rows of ``X`` that cover it evenly.

    Each new landmark is the point farthest from those already chosen (the
    "maxmin" rule), a cheap way to keep Rips persistence in dimension 2 fast.

    Returns
    -------
    ndarray, shape (m, d)
    """
    X = _points(X)
    m = _count(m, "m")
    if m > len(X):
        raise ValueError(f"Cannot choose m={m} landmarks from {len(X)} points; use m <= {len(X)}.")
    chosen, dist = [0], np.linalg.norm(X - X[0], axis=1)
    for _ in range(m - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(X - X[chosen[-1]], axis=1))
    return X[chosen]


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

    Example
    -------
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

    Example
    -------
    >>> round(ellipse_perimeter(1.0, 1.0), 6)
    6.283185
    """
    from scipy.special import ellipe

    a, b = _positive(a, "a"), _positive(b, "b")
    a, b = max(a, b), min(a, b)
    return float(4 * a * ellipe(1 - (b / a) ** 2))


def _closed_curve(curve: object) -> np.ndarray:
    curve = _points(curve, "curve", dim=2)
    if len(curve) < 8:
        raise ValueError(
            f"curve needs at least 8 ordered points of a closed curve, got {len(curve)}."
        )
    return curve


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

    Example
    -------
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

    Example
    -------
    >>> round(ball_volume(2, 1.0), 6)
    3.141593
    """
    k, radius = _count(k, "k"), _positive(radius, "radius")
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

    Example
    -------
    >>> round(nsw_sample_bound(2 * np.pi, 1, 1.0, 0.2, 0.05))
    492
    """
    volume, k, tau = _positive(volume, "volume"), _count(k, "k"), _positive(tau, "tau")
    eps, delta = _positive(eps, "eps"), _positive(delta, "delta")
    if eps >= tau / 2:
        raise ValueError(
            f"Theorem 3.1 needs eps < tau/2 = {tau / 2:g}, got eps={eps:g}; choose a smaller eps."
        )
    if delta >= 1:
        raise ValueError(f"delta is a failure probability in (0, 1), got {delta:g}.")
    cos1, cos2 = math.cos(math.asin(eps / (8 * tau))), math.cos(math.asin(eps / (16 * tau)))
    beta1 = volume / (cos1**k * ball_volume(k, eps / 4))
    beta2 = volume / (cos2**k * ball_volume(k, eps / 8))
    return beta1 * (math.log(beta2) + math.log(1 / delta))


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

    Example
    -------
    >>> [len(d) for d in persistence(np.array([[0, 0], [3, 0], [0, 4]]), maxdim=0)]
    [3]
    """
    from ripser import ripser

    X = _points(X)
    maxdim = _count(maxdim, "maxdim", minimum=0)
    thresh = _positive(thresh, "thresh", allow_inf=True)
    if math.isinf(thresh):
        return ripser(X, maxdim=maxdim)["dgms"]
    # Below a finite threshold only nearby pairs matter: a sparse distance matrix
    # (missing entries = "no edge", missing diagonal = births at 0) saves the n^2 matrix.
    tree = cKDTree(X)
    sparse = tree.sparse_distance_matrix(tree, thresh, output_type="coo_matrix")
    return ripser(sparse, maxdim=maxdim, distance_matrix=True)["dgms"]


def betti_numbers(diagrams: list[np.ndarray], eps: float) -> list[int]:
    r"""Betti numbers of the Rips complex at scale ``eps``, read off persistence diagrams.

    .. math:: \beta_j(\varepsilon) = \#\{[b, d) \in \mathrm{Dgm}_j : b \le \varepsilon < d\}

    Returns
    -------
    list of int, one per diagram (dimension 0, 1, ...)

    Example
    -------
    >>> betti_numbers(persistence(np.array([[0, 0], [3, 0], [0, 4]]), maxdim=0), 3.5)
    [2]
    """
    if not isinstance(diagrams, (list, tuple)) or not diagrams:
        raise TypeError(
            f"diagrams must be a non-empty list of (k, 2) arrays as returned by persistence(), "
            f"got {type(diagrams).__name__}."
        )
    if isinstance(eps, bool) or not isinstance(eps, Real) or math.isnan(eps):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__} {eps!r}.")
    betti = []
    for j, dgm in enumerate(diagrams):
        dgm = (
            np.asarray(dgm, dtype=float).reshape(-1, 2)
            if np.size(dgm) == 0
            else np.asarray(dgm, float)
        )
        if dgm.ndim != 2 or dgm.shape[1] != 2:
            raise ValueError(
                f"Diagram {j} must have shape (k, 2) of (birth, death) rows, got {dgm.shape}."
            )
        betti.append(int(np.sum((dgm[:, 0] <= eps) & (eps < dgm[:, 1]))))
    return betti


def recovers_homology(X: np.ndarray, eps: float, betti: list[int]) -> bool:
    r"""Whether the Rips complex of ``X`` at scale $2\varepsilon$ has the Betti numbers ``betti``.

    Two $\varepsilon$-balls meet exactly when their centres are within $2\varepsilon$,
    so the Rips complex at $2\varepsilon$ has the same graph as the nerve of the
    union of $\varepsilon$-balls (the Čech complex); for points on a curve of reach
    $\tau > 2\varepsilon$ both are circles as soon as the balls cover the curve.
    """
    betti = list(betti)
    eps = _positive(eps, "eps")
    if not betti:
        raise ValueError("betti must list the expected Betti numbers, e.g. [1, 1] for a circle.")
    diagrams = persistence(X, maxdim=len(betti) - 1, thresh=2 * eps * (1 + 1e-9))
    return betti_numbers(diagrams, 2 * eps) == betti


def rips_simplex_count(X: np.ndarray, eps: float, maxdim: int) -> list[int]:
    r"""Number of $k$-simplices of the Rips complex at scale ``eps``, for $k = 0..$``maxdim``.

    A $k$-simplex is a set of $k+1$ points that are pairwise within ``eps`` (a
    $(k+1)$-clique of the $\varepsilon$-graph). Cliques are grown one vertex at a
    time, each new vertex a common neighbour with a larger index, so each is
    counted once. When ``eps`` exceeds the diameter every subset is a simplex:
    $\sum_k \binom{n}{k+1} = 2^n - 1$ — the curse of dimensionality.

    Returns
    -------
    list of int, length maxdim + 1

    Example
    -------
    >>> rips_simplex_count(np.eye(4), eps=2.0, maxdim=3)
    [4, 6, 4, 1]
    """
    X, eps = _points(X), _positive(eps, "eps", allow_zero=True, allow_inf=True)
    maxdim = _count(maxdim, "maxdim", minimum=0)
    adjacent = cdist(X, X) <= eps
    upper = np.triu(adjacent, k=1)  # neighbours with a larger index
    counts = [0] * (maxdim + 1)
    frontier = [np.flatnonzero(upper[i]) for i in range(len(X))]  # candidates extending {i}
    for dim in range(maxdim + 1):
        counts[dim] = len(frontier)
        if dim == maxdim:
            break
        frontier = [cand[upper[v, cand]] for cand in frontier for v in cand]
    return counts


# --------------------------------------------------------------------------- figures

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
        As returned by ``topology.persistence``.
    eps : float, optional
        Scale to mark.
    min_length : float, default=0
        Hide bars shorter than this (noise), to keep long barcodes readable.
    """
    if not isinstance(diagrams, (list, tuple)) or not diagrams:
        raise TypeError(
            "diagrams must be a non-empty list of (k, 2) arrays, as returned by persistence()."
        )
    finite = [d[np.isfinite(d[:, 1]), 1] for d in map(np.asarray, diagrams) if len(d)]
    right = 1.1 * max([f.max() for f in finite if f.size] + [eps or 0.0, 1e-9])
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    row = 0
    for dim, dgm in enumerate(diagrams):
        dgm = np.asarray(dgm).reshape(-1, 2)
        dgm = dgm[dgm[:, 1] - dgm[:, 0] > min_length]
        dgm = dgm[np.lexsort((-dgm[:, 1], dgm[:, 0]))]                 # by birth, longest first
        rows = row + np.arange(len(dgm))
        ends = np.minimum(dgm[:, 1], right)
        ax.hlines(rows, dgm[:, 0], ends, color=f"C{dim}", lw=2, label=f"$H_{dim}$")
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
    diagrams: Sequence[np.ndarray],
    ax: plt.Axes | None = None,
    title: str | None = "persistence diagram",
) -> Figure:
    """Persistence diagram (persim): one point (birth, death) per class.

    Points far from the diagonal are persistent features; points near it are noise.
    """
    from persim import plot_diagrams

    if ax is None:
        _, ax = plt.subplots(figsize=(3.8, 3.8))
    plot_diagrams([np.asarray(d) for d in diagrams], ax=ax, show=False)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


# ------------------------------------------------------------------------- Try it


def _draw_rips_complex(ax: plt.Axes, X, eps: float) -> None:
    """Balls of radius ε/2, Rips edges and triangles at scale ε, over the plane points X."""
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


def topology_widget(X=None, eps: float | None = None, maxdim: int = 1) -> ipywidgets.VBox:
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
    X = sample_circle(30, noise=0.08, seed=0) if X is None else np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"topology_widget draws plane point clouds: X must have shape (n, 2), "
                         f"got {X.shape}.")
    diagrams = persistence(X, maxdim=maxdim)
    top = 1.2 * max(float(d[np.isfinite(d[:, 1]), 1].max(initial=0.0)) for d in diagrams)
    if eps is None:
        h1 = diagrams[1] if maxdim >= 1 and len(diagrams[1]) else np.array([[0.5, 0.5]])
        birth, death = h1[np.argmax(h1[:, 1] - h1[:, 0])]
        eps = float(birth + 0.25 * (death - birth))       # early in the longest loop's life

    def draw(eps: float):
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2),
                                          gridspec_kw={"width_ratios": [1, 1.3]})
        _draw_rips_complex(left, X, eps)
        betti = betti_numbers(diagrams, eps)
        names = ", ".join(f"β{j} = {b}" for j, b in enumerate(betti))
        plot_barcode(diagrams, eps=eps, ax=right, title=f"Betti numbers at ε: {names}")
        fig.tight_layout()
        return fig

    slider = ipywidgets.FloatSlider(value=round(eps, 2), min=0.0, max=round(max(top, eps), 2),
                                 step=0.01, description="ε", continuous_update=False)
    return widgets.try_it(draw, eps=slider)
