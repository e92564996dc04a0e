"""Geometry primitives of zones and lines, with hypothesis."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared import geometry as g

coord = st.floats(0.0, 1.0, allow_nan=False)
point = st.tuples(coord, coord)


def test_point_in_square_and_outside():
    sq = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)]
    assert g.point_in_polygon((0.5, 0.5), sq)
    assert not g.point_in_polygon((0.1, 0.5), sq)
    assert not g.point_in_polygon((0.5, 0.9), sq)
    assert g.point_in_polygon((0.2, 0.5), sq)  # on an edge counts as inside


def test_point_in_concave_polygon():
    # A "U": the notch between the arms is outside.
    u = [(0.1, 0.1), (0.3, 0.1), (0.3, 0.6), (0.7, 0.6), (0.7, 0.1), (0.9, 0.1),
         (0.9, 0.9), (0.1, 0.9)]  # fmt: skip
    assert g.is_simple_polygon(u)
    assert not g.point_in_polygon((0.5, 0.3), u)
    assert g.point_in_polygon((0.2, 0.3), u)
    assert g.point_in_polygon((0.5, 0.8), u)


@settings(max_examples=300)
@given(x1=coord, y1=coord, x2=coord, y2=coord, p=point)
def test_point_in_rectangle_matches_bounds(x1, y1, x2, y2, p):
    lo_x, hi_x, lo_y, hi_y = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    assume(hi_x - lo_x > 1e-3 and hi_y - lo_y > 1e-3)
    rect = [(lo_x, lo_y), (hi_x, lo_y), (hi_x, hi_y), (lo_x, hi_y)]
    assume(min(abs(p[0] - lo_x), abs(p[0] - hi_x), abs(p[1] - lo_y), abs(p[1] - hi_y)) > 1e-9)
    inside = lo_x <= p[0] <= hi_x and lo_y <= p[1] <= hi_y
    assert g.point_in_polygon(p, rect) == inside
    # Winding order does not matter.
    assert g.point_in_polygon(p, rect[::-1]) == inside


@settings(max_examples=300)
@given(p=point, tri=st.tuples(point, point, point))
def test_point_in_triangle_matches_barycentric_sign(p, tri):
    a, b, c = tri
    assume(abs(g.cross(a, b, c)) > 1e-4)
    d1, d2, d3 = g.cross(a, b, p), g.cross(b, c, p), g.cross(c, a, p)
    margin = 1e-9
    strictly_in = (d1 > margin and d2 > margin and d3 > margin) or (
        d1 < -margin and d2 < -margin and d3 < -margin
    )
    strictly_out = (min(d1, d2, d3) < -margin) and (max(d1, d2, d3) > margin)
    if strictly_in:
        assert g.point_in_polygon(p, [a, b, c])
    elif strictly_out:
        assert not g.point_in_polygon(p, [a, b, c])


@settings(max_examples=300)
@given(p1=point, p2=point, q1=point, q2=point)
def test_segment_intersection_symmetric(p1, p2, q1, q2):
    r = g.segments_intersect(p1, p2, q1, q2)
    assert r == g.segments_intersect(q1, q2, p1, p2)
    assert r == g.segments_intersect(p2, p1, q2, q1)


@settings(max_examples=300)
@given(p1=point, p2=point, q1=point, q2=point)
def test_segment_intersection_matches_parametric_solution(p1, p2, q1, q2):
    d = (p2[0] - p1[0]) * (q2[1] - q1[1]) - (p2[1] - p1[1]) * (q2[0] - q1[0])
    assume(abs(d) > 1e-3)  # clearly not parallel
    t = ((q1[0] - p1[0]) * (q2[1] - q1[1]) - (q1[1] - p1[1]) * (q2[0] - q1[0])) / d
    u = ((q1[0] - p1[0]) * (p2[1] - p1[1]) - (q1[1] - p1[1]) * (p2[0] - p1[0])) / d
    eps = 1e-6
    if -eps > t or t > 1 + eps or -eps > u or u > 1 + eps:
        assert not g.segments_intersect(p1, p2, q1, q2) or min(t, u) > -1e-3
    elif eps < t < 1 - eps and eps < u < 1 - eps:
        assert g.segments_intersect(p1, p2, q1, q2)


@settings(max_examples=300)
@given(a=point, b=point, p=point, q=point)
def test_direction_is_antisymmetric_and_matches_sides(a, b, p, q):
    assume(abs(a[0] - b[0]) + abs(a[1] - b[1]) > 1e-3)
    d = g.crossing_direction(p, q, a, b)
    back = g.crossing_direction(q, p, a, b)
    if d is None:
        assert back is None
    else:
        assert back == {"a_to_b": "b_to_a", "b_to_a": "a_to_b"}[d]
        assert d == f"{g.side_of(p, a, b).lower()}_to_{g.side_of(q, a, b).lower()}"
        assert g.segments_intersect(p, q, a, b)


def test_sides_on_screen():
    # Horizontal line left -> right: above (smaller y) is on the walker's left = A.
    a, b = (0.0, 0.5), (1.0, 0.5)
    assert g.side_of((0.5, 0.2), a, b) == "A"
    assert g.side_of((0.5, 0.8), a, b) == "B"
    assert g.side_of((0.5, 0.505), a, b, margin=0.01) is None
    assert g.crossing_direction((0.5, 0.2), (0.5, 0.8), a, b) == "a_to_b"
    assert g.crossing_direction((0.5, 0.8), (0.5, 0.2), a, b) == "b_to_a"
    # Passing beside the segment's end is not a crossing.
    assert g.crossing_direction((0.5, 0.2), (0.5, 0.8), (0.6, 0.5), (1.0, 0.5)) is None


@settings(max_examples=200)
@given(a=point, b=point, p=point)
def test_side_value_is_a_distance(a, b, p):
    assume(abs(a[0] - b[0]) + abs(a[1] - b[1]) > 1e-2)
    v = g.side_value(p, a, b)
    assert abs(v) <= g.distance_to_segment(p, a, b) + 1e-9
    assert abs(g.side_value(p, b, a) + v) < 1e-9


def test_self_intersection():
    bowtie = [(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)]
    assert g.self_intersection(bowtie) is not None
    assert not g.is_simple_polygon(bowtie)
    assert g.self_intersection([(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)]) is None
    # Spike folding back on its own edge.
    assert g.self_intersection([(0.1, 0.1), (0.9, 0.1), (0.5, 0.1), (0.5, 0.5)]) is not None
    assert not g.is_simple_polygon([(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)])  # no area


@settings(max_examples=200)
@given(pts=st.lists(point, min_size=3, max_size=8))
def test_simple_polygons_have_consistent_inside(pts):
    """For a simple polygon, every edge midpoint nudged inwards/outwards splits in/out."""
    assume(g.is_simple_polygon(pts) and g.polygon_area(pts) > 1e-3)
    c = g.bottom_centre((0, 0, 0, 0))
    assert c == (0.0, 0.0)
    # Vertices are on the boundary: inside by convention.
    for v in pts:
        assert g.point_in_polygon(v, pts)
