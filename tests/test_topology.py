"""Tests of utils.topology against independent references: gudhi's Rips
persistence, a brute-force union–find H0, brute-force clique enumeration, and
closed forms (reach of circles and ellipses, ball volumes, Betti numbers)."""

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
    ],
)
def test_bad_inputs_raise_clear_errors(call, error):
    with pytest.raises(error):
        call()
