"""Tests of utils.topology against independent references: gudhi's Rips
persistence and Betti numbers, ripser, a brute-force union–find H0, brute-force
clique enumeration, and closed forms (reach of circles, ellipses and the waist of
a Cassini oval, ball volumes, Betti numbers, the boundary of a boundary)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from utils import topology

gudhi = pytest.importorskip("gudhi")


# ----------------------------------------------------------------------------- references
def finite_bars(diagram: np.ndarray) -> np.ndarray:
    """Sorted bars of positive length (zero-length bars are conventions, not classes)."""
    diagram = np.asarray(diagram, float).reshape(-1, 2)
    diagram = diagram[diagram[:, 1] - diagram[:, 0] > 1e-9]
    return diagram[np.lexsort((diagram[:, 1], diagram[:, 0]))]


def gudhi_diagrams(X: np.ndarray, maxdim: int) -> list[np.ndarray]:
    tree = gudhi.RipsComplex(points=X, max_edge_length=np.inf).create_simplex_tree(
        max_dimension=maxdim + 1
    )
    tree.compute_persistence()
    return [
        np.asarray(tree.persistence_intervals_in_dimension(j)).reshape(-1, 2)
        for j in range(maxdim + 1)
    ]


def union_find_h0(X: np.ndarray) -> np.ndarray:
    """H0 deaths by Kruskal: every edge that merges two components kills one bar."""
    dist = cdist(X, X)
    parent = list(range(len(X)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    deaths = []
    for i, j in sorted(itertools.combinations(range(len(X)), 2), key=lambda e: dist[e]):
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[ri] = rj
            deaths.append(dist[i, j])
    return np.array(sorted(deaths) + [np.inf])


def brute_force_simplices(X: np.ndarray, eps: float, maxdim: int) -> list[int]:
    dist = cdist(X, X)
    return [
        sum(
            all(dist[a, b] <= eps for a, b in itertools.combinations(s, 2))
            for s in itertools.combinations(range(len(X)), k + 1)
        )
        for k in range(maxdim + 1)
    ]


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_persistence_matches_gudhi(seed):
    X = np.random.default_rng(seed).normal(size=(25, 2))
    ours, theirs = topology.persistence(X, maxdim=1), gudhi_diagrams(X, maxdim=1)
    for j in range(2):
        a, b = finite_bars(ours[j]), finite_bars(theirs[j])
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_thresholded_persistence_is_the_truncated_full_one():
    X = topology.sample_circle(60, noise=0.1, seed=5)
    full, cut = topology.persistence(X, maxdim=1), topology.persistence(X, maxdim=1, thresh=0.7)
    for j in range(2):
        expected = full[j][full[j][:, 0] <= 0.7].copy()
        expected[expected[:, 1] > 0.7, 1] = np.inf
        np.testing.assert_allclose(finite_bars(cut[j]), finite_bars(expected), rtol=1e-6)


def test_h0_matches_union_find():
    X = topology.sample_circle(40, noise=0.1, seed=3)
    deaths = np.sort(topology.persistence(X, maxdim=0)[0][:, 1])
    np.testing.assert_allclose(deaths, union_find_h0(X), rtol=1e-6)


def test_huang_three_point_example():
    diagrams = topology.persistence(np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]), maxdim=1)
    assert [topology.betti_numbers(diagrams, e)[0] for e in (0.0, 2.9, 3.5, 4.5, 6.0)] == [
        3,
        3,
        2,
        1,
        1,
    ]
    assert len(diagrams[1]) == 0  # the triangle fills in at 5, together with the last edge


def test_betti_circle_torus_sphere():
    circle = topology.persistence(topology.sample_circle(100, noise=0.05, seed=0), maxdim=1)
    assert topology.betti_numbers(circle, 0.5) == [1, 1]
    torus = topology.persistence(
        topology.landmarks(topology.sample_torus(2000, seed=0), 100), maxdim=2
    )
    assert topology.betti_numbers(torus, 1.5) == [1, 2, 1]
    sphere = topology.persistence(
        topology.landmarks(topology.sample_sphere(1000, seed=0), 60), maxdim=2
    )
    assert topology.betti_numbers(sphere, 1.0) == [1, 0, 1]


def test_betti_numbers_half_open_intervals():
    diagrams = [np.array([[0.0, 1.0], [0.0, np.inf]]), np.array([[0.5, 2.0]])]
    assert topology.betti_numbers(diagrams, 0.5) == [2, 1]
    assert topology.betti_numbers(diagrams, 1.0) == [1, 1]  # death 1.0 is excluded
    assert topology.betti_numbers(diagrams, 2.0) == [1, 0]


# ----------------------------------------------------------------------------- simplices
@pytest.mark.parametrize("eps", [0.0, 0.8, 1.5, 10.0])
def test_rips_simplex_count_matches_brute_force(eps):
    X = np.random.default_rng(4).uniform(size=(11, 2)) * 2
    assert topology.rips_simplex_count(X, eps, maxdim=4) == brute_force_simplices(X, eps, maxdim=4)


def test_rips_simplex_count_worst_case_is_two_to_the_n():
    n = 12
    counts = topology.rips_simplex_count(
        np.random.default_rng(0).normal(size=(n, 3)), 1e9, maxdim=n - 1
    )
    assert counts == [math.comb(n, k + 1) for k in range(n)] and sum(counts) == 2**n - 1


# ----------------------------------------------------------------------------- reach and NSW
@pytest.mark.parametrize("a, b", [(1.0, 1.0), (2.5, 2.5), (2.0, 1.0), (3.0, 1.0), (1.5, 1.2)])
def test_reach_estimates_match_closed_form(a, b):
    t = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    curve = np.column_stack([a * np.cos(t), b * np.sin(t)])
    tau = topology.reach_ellipse(a, b)
    assert tau == pytest.approx(b * b / a)
    assert topology.reach_federer(curve) == pytest.approx(tau, rel=2e-3)
    assert topology.local_feature_size(curve).min() == pytest.approx(tau, rel=2e-3)


def test_medial_axis_of_ellipse_is_the_focal_segment():
    t = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    axis = topology.medial_axis(np.column_stack([2 * np.cos(t), np.sin(t)]))
    assert np.abs(axis[:, 1]).max() < 1e-6  # on the major axis
    assert np.abs(axis[:, 0]).max() == pytest.approx(2 - 0.5, rel=1e-2)  # |x| <= a - b^2/a


def test_reach_detects_a_bottleneck():
    # A peanut whose neck has half-width 0.1 while its smallest radius of curvature
    # is about 0.128: the reach is set by two distant points, not by curvature.
    t = np.linspace(0, 2 * np.pi, 800, endpoint=False)
    curve = np.column_stack([np.cos(t), np.sin(t) * (0.1 + np.cos(t) ** 2)])
    assert topology.reach_federer(curve) == pytest.approx(0.1, rel=1e-3)
    assert topology.local_feature_size(curve).min() == pytest.approx(0.1, rel=2e-3)


def test_ball_volume_and_nsw_bound_closed_form():
    assert topology.ball_volume(1, 0.5) == pytest.approx(1.0)
    assert topology.ball_volume(3, 2.0) == pytest.approx(4 / 3 * np.pi * 8)
    vol, tau, eps, delta = 2 * np.pi, 1.0, 0.2, 0.05
    c1, c2 = np.sqrt(1 - (eps / 8) ** 2), np.sqrt(1 - (eps / 16) ** 2)
    beta1, beta2 = vol / (c1 * eps / 2), vol / (c2 * eps / 4)
    assert topology.nsw_sample_bound(vol, 1, tau, eps, delta) == pytest.approx(
        beta1 * np.log(beta2 / delta)
    )


def test_bound_sample_size_recovers_circle_homology():
    eps = 0.2
    n = int(np.ceil(topology.nsw_sample_bound(2 * np.pi, 1, 1.0, eps, 0.05)))
    assert all(
        topology.recovers_homology(topology.sample_circle(n, seed=s), eps, [1, 1])
        for s in range(10)
    )


def test_samplers_shapes_and_manifolds():
    assert np.allclose(np.linalg.norm(topology.sample_circle(50, radius=2.0, seed=0), axis=1), 2.0)
    x, y = topology.sample_ellipse(50, 2.0, 1.0, seed=0).T
    assert np.allclose((x / 2) ** 2 + y**2, 1.0)
    x, y, z = topology.sample_torus(50, seed=0).T
    assert np.allclose((np.hypot(x, y) - 2.0) ** 2 + z**2, 1.0)
    assert topology.sample_sphere(50, dim=3, seed=0).shape == (50, 4)
    assert topology.ellipse_perimeter(1.0, 1.0) == pytest.approx(2 * np.pi)


def test_ellipse_sampler_is_uniform_in_arc_length():
    x, y = topology.sample_ellipse(20000, 3.0, 1.0, seed=0).T
    near_vertex = np.mean(np.abs(x) > 2.9)  # two short arcs near (±3, 0)
    t = np.linspace(0, 2 * np.pi, 200001)
    speed = np.hypot(3 * np.sin(t), np.cos(t))
    expected = speed[np.abs(3 * np.cos(t)) > 2.9].sum() / speed.sum()
    assert near_vertex == pytest.approx(expected, abs=0.01)


# ----------------------------------------------------------------------------- homology as linear algebra
def gudhi_betti(X: np.ndarray, eps: float, maxdim: int) -> list[int]:
    """Betti numbers 0..maxdim of gudhi's Rips complex at scale eps (an independent implementation)."""
    tree = gudhi.RipsComplex(points=X, max_edge_length=eps).create_simplex_tree(max_dimension=maxdim + 1)
    tree.compute_persistence(persistence_dim_max=True)
    betti = tree.betti_numbers()
    return (betti + [0] * (maxdim + 1))[: maxdim + 1]


def test_boundary_matrix_by_hand_and_boundary_of_boundary_is_zero():
    triangle, edges, vertices = [(0, 1, 2)], [(0, 1), (0, 2), (1, 2)], [(0,), (1,), (2,)]
    # d[0,1,2] = [1,2] - [0,2] + [0,1];  d[a,b] = [b] - [a]
    np.testing.assert_array_equal(topology.boundary_matrix(triangle, edges), [[1], [-1], [1]])
    np.testing.assert_array_equal(
        topology.boundary_matrix(edges, vertices), [[-1, -1, 0], [1, 0, -1], [0, 1, 1]]
    )
    X = np.random.default_rng(0).uniform(size=(12, 3))
    complex_ = topology.rips_complex(X, 0.7, maxdim=3)
    for k in (1, 2):
        d_k = topology.boundary_matrix(complex_[k], complex_[k - 1])
        d_up = topology.boundary_matrix(complex_[k + 1], complex_[k])
        assert d_k.shape == (len(complex_[k - 1]), len(complex_[k])) and set(np.unique(d_k)) <= {-1, 0, 1}
        assert (np.abs(d_k).sum(axis=0) == k + 1).all()  # a k-simplex has k + 1 faces
        np.testing.assert_array_equal(d_k @ d_up, 0)


def test_rips_complex_matches_brute_force_cliques():
    X = np.random.default_rng(1).uniform(size=(9, 2))
    dist = cdist(X, X)
    complex_ = topology.rips_complex(X, 0.5, maxdim=3)
    for k, level in enumerate(complex_):
        expected = [s for s in itertools.combinations(range(9), k + 1)
                    if all(dist[a, b] <= 0.5 for a, b in itertools.combinations(s, 2))]
        assert level == expected  # same simplices, lexicographic order


@pytest.mark.parametrize("seed", range(6))
def test_betti_from_ranks_matches_ripser_and_gudhi_on_random_clouds(seed):
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(16, 2)) if seed % 2 else topology.sample_circle(16, noise=0.1, seed=seed)
    diagrams = topology.persistence(X, maxdim=1)
    lengths = np.unique(cdist(X, X))
    for i in (len(lengths) * np.array([0.05, 0.15, 0.3, 0.5])).astype(int):
        eps = (lengths[i] + lengths[i + 1]) / 2  # between two edge lengths: no ties (ripser rounds to float32)
        ours = topology.betti_from_ranks(topology.rips_complex(X, eps, maxdim=2))[:2]
        assert ours == topology.betti_numbers(diagrams, eps) == gudhi_betti(X, eps, maxdim=1), eps


@pytest.mark.parametrize("seed", range(3))
def test_laplacian_kernel_dimension_is_the_betti_number(seed):
    X = topology.sample_circle(14, noise=0.1, seed=seed)
    complex_ = topology.rips_complex(X, 0.6, maxdim=2)
    betti = topology.betti_from_ranks(complex_)
    for k in range(3):
        laplacian = topology.combinatorial_laplacian(complex_, k)
        np.testing.assert_allclose(laplacian, laplacian.T)
        eigenvalues = np.linalg.eigvalsh(laplacian) if len(laplacian) else np.array([])
        assert eigenvalues.min(initial=0.0) > -1e-9  # positive semi-definite
        assert int(np.sum(eigenvalues < 1e-9)) == betti[k]


def test_huang_three_point_example_as_linear_algebra():
    X = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    expected = {3.5: ([[(0, 1)]], [2, 0]), 4.5: ([[(0, 1), (0, 2)]], [1, 0]), 5.5: (None, [1, 0])}
    for eps, (_, betti) in expected.items():
        complex_ = topology.rips_complex(X, eps, maxdim=2)
        assert topology.betti_from_ranks(complex_)[:2] == betti
    edges = topology.rips_complex(X, 4.5, maxdim=1)[1]
    assert [topology.basis_label(e, 3) for e in edges] == ["110", "101"]
    psi = topology.simplex_state(edges, 3)
    expected_state = np.zeros(8)
    expected_state[[0b110, 0b101]] = 1 / np.sqrt(2)  # (|110> + |101>) / sqrt(2)
    np.testing.assert_allclose(psi, expected_state)
    np.testing.assert_allclose(topology.simplex_state([(0, 1)], 3), np.eye(8)[0b110])
    laplacian = topology.combinatorial_laplacian(topology.rips_complex(X, 4.5, maxdim=1), 1)
    np.testing.assert_allclose(np.linalg.eigvalsh(laplacian), [1.0, 3.0])  # no zero: beta_1 = 0


def test_simplex_state_is_normalised_and_the_register_holds_every_simplex():
    n = 6
    everything = topology.rips_complex(np.random.default_rng(0).normal(size=(n, 2)), np.inf, maxdim=n - 1)
    labels = {topology.basis_label(s, n) for level in everything for s in level}
    assert len(labels) == 2**n - 1 and "0" * n not in labels  # every non-empty subset, once
    for level in everything:
        assert np.linalg.norm(topology.simplex_state(level, n)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the reach experiment
@pytest.mark.parametrize("b", [1.01, 1.05, 1.1])
def test_cassini_oval_reach_is_its_waist_near_the_lemniscate(b):
    oval = topology.cassini_oval(b, m=500)
    gaps = np.linalg.norm(np.diff(np.vstack([oval, oval[:1]]), axis=0), axis=1)
    assert gaps.max() / gaps.min() < 1.01  # equally spaced in arc length
    focal = np.prod([np.linalg.norm(oval - [s, 0], axis=1) for s in (-1, 1)], axis=0)
    np.testing.assert_allclose(focal, b**2, rtol=1e-3)  # on the curve |p - f1| |p - f2| = b^2
    assert topology.reach_federer(oval) == pytest.approx(np.sqrt(b * b - 1), rel=2e-3)
    scaled = topology.cassini_oval(b, m=500, length=2 * np.pi)
    assert topology.curve_length(scaled) == pytest.approx(2 * np.pi)


def test_sample_curve_is_uniform_in_arc_length():
    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    ellipse = np.column_stack([3 * np.cos(t), np.sin(t)])
    x, _ = topology.sample_curve(ellipse, 20000, seed=0).T
    reference, _ = topology.sample_ellipse(20000, 3.0, 1.0, seed=1).T  # rejection sampler, another method
    assert np.mean(np.abs(x) > 2.9) == pytest.approx(np.mean(np.abs(reference) > 2.9), abs=0.01)


def test_recovery_fails_once_the_balls_bridge_the_waist():
    out = topology.pinch_experiment([1.5, 1.05, 1.01], n=520, eps=0.2, trials=6, progress=False)
    ratio, success = out["eps_over_tau"], out["success"]
    assert ratio[0] < 0.5 < ratio[1] < 1.0 < ratio[2]
    assert success.tolist() == [1.0, 1.0, 0.0]
    assert np.isfinite(out["nsw_bound"][0]) and np.isnan(out["nsw_bound"][1:]).all()
    assert out["nsw_bound"][0] < 520  # n is above the bound where the theorem applies


# ----------------------------------------------------------------------------- figures and widget
def test_figures_and_widget_draw():
    import ipywidgets
    import matplotlib.pyplot as plt

    X = topology.sample_circle(15, noise=0.05, seed=0)
    diagrams = topology.persistence(X)
    assert len(topology.plot_barcode(diagrams, eps=0.5, min_length=0.05).axes) == 1
    assert topology.plot_persistence_diagram(diagrams).axes[0].get_title() == "persistence diagram"
    fig = topology.plot_rips_complex(np.array([[0, 0], [3, 0], [0, 4]]), 4.5, labels=True)
    assert {t.get_text() for t in fig.axes[0].texts} >= {"|110⟩", "|101⟩"}
    assert isinstance(topology.topology_widget(X, maxdim=1), ipywidgets.VBox)
    with pytest.raises(ValueError, match=r"\(n, 2\)|2 columns"):
        topology.topology_widget(np.zeros((5, 3)))
    plt.close("all")


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: topology.persistence(np.zeros(5)), ValueError),
        (lambda: topology.persistence("points"), TypeError),
        (lambda: topology.persistence(np.array([[0.0, np.nan]])), ValueError),
        (lambda: topology.persistence(np.zeros((3, 2)), maxdim=1.5), TypeError),
        (lambda: topology.persistence(np.zeros((3, 2)), maxdim=-1), ValueError),
        (lambda: topology.betti_numbers(np.zeros((3, 2)), 1.0), TypeError),
        (lambda: topology.betti_numbers([np.zeros(3)], 1.0), ValueError),
        (lambda: topology.betti_numbers([np.zeros((1, 2))], "1"), TypeError),
        (lambda: topology.reach_ellipse(-1.0, 1.0), ValueError),
        (lambda: topology.reach_ellipse("2", 1.0), TypeError),
        (lambda: topology.nsw_sample_bound(1.0, 1, 1.0, 0.5, 0.05), ValueError),  # eps = tau/2
        (lambda: topology.nsw_sample_bound(1.0, 1, 1.0, 0.1, 1.5), ValueError),
        (lambda: topology.nsw_sample_bound(1.0, 0, 1.0, 0.1, 0.05), ValueError),
        (lambda: topology.sample_circle(0), ValueError),
        (lambda: topology.sample_circle(10.0), TypeError),
        (lambda: topology.sample_torus(10, R=1.0, r=2.0), ValueError),
        (lambda: topology.sample_circle(10, noise=-0.1), ValueError),
        (lambda: topology.rips_simplex_count(np.zeros((3, 2)), -1.0, 1), ValueError),
        (lambda: topology.landmarks(np.zeros((3, 2)), 5), ValueError),
        (lambda: topology.reach_federer(np.zeros((10, 3))), ValueError),
        (lambda: topology.boundary_matrix([(1, 0)], [(0,), (1,)]), ValueError),  # not increasing
        (lambda: topology.boundary_matrix([(0, 1, 2)], [(0, 1), (1, 2)]), ValueError),  # a face is missing
        (lambda: topology.boundary_matrix([(0, 1, 2)], [(0,), (1,)]), ValueError),  # wrong dimension
        (lambda: topology.boundary_matrix("01", [(0,)]), TypeError),
        (lambda: topology.betti_from_ranks([]), TypeError),
        (lambda: topology.combinatorial_laplacian([[(0,)]], 1), ValueError),
        (lambda: topology.basis_label((0, 3), 3), ValueError),
        (lambda: topology.simplex_state([], 3), ValueError),
        (lambda: topology.cassini_oval(1.0), ValueError),
        (lambda: topology.cassini_oval(0.5), ValueError),
        (lambda: topology.sample_curve(np.zeros((5, 2)), 10), ValueError),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error):
    with pytest.raises(error):
        call()
