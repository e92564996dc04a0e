"""Plane geometry for zones and lines, in normalised image coordinates.

Points are ``(x, y)`` with ``x`` to the right and ``y`` downwards (image
convention), usually in 0..1.  Everything here is pure and exact up to float
rounding; the rules engine (:mod:`shared.rules`) builds hysteresis on top.

Sides of a directed line ``a → b``: :func:`side_value` is the cross product
``(b - a) × (p - a)``.  On screen (y down) a positive value means ``p`` is on the
*right* when walking from ``a`` to ``b``; Sentri calls the left side ``A`` and the
right side ``B`` (see :func:`side_of`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]

EPS = 1e-12


def cross(o: Point, a: Point, b: Point) -> float:
    """``(a - o) × (b - o)``: > 0 when ``o → a → b`` turns clockwise on screen (y down)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def orientation(o: Point, a: Point, b: Point) -> int:
    v = cross(o, a, b)
    return 0 if abs(v) <= EPS else (1 if v > 0 else -1)


def _on_segment(p: Point, a: Point, b: Point) -> bool:
    """``p`` (known collinear with ``a``-``b``) lies within the segment's box."""
    return (
        min(a[0], b[0]) - EPS <= p[0] <= max(a[0], b[0]) + EPS
        and min(a[1], b[1]) - EPS <= p[1] <= max(a[1], b[1]) + EPS
    )


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Do the closed segments ``p1-p2`` and ``q1-q2`` share at least one point?"""
    o1, o2 = orientation(p1, p2, q1), orientation(p1, p2, q2)
    o3, o4 = orientation(q1, q2, p1), orientation(q1, q2, p2)
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True
    if o1 == 0 and _on_segment(q1, p1, p2):
        return True
    if o2 == 0 and _on_segment(q2, p1, p2):
        return True
    if o3 == 0 and _on_segment(p1, q1, q2):
        return True
    return o4 == 0 and _on_segment(p2, q1, q2)


def side_value(p: Point, a: Point, b: Point) -> float:
    """Signed distance of ``p`` from the infinite line through ``a`` and ``b``.

    Positive on side ``B`` (right of ``a → b`` on screen), negative on side ``A``.
    """
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if length <= EPS:
        return 0.0
    return cross(a, b, p) / length


def side_of(p: Point, a: Point, b: Point, margin: float = 0.0) -> str | None:
    """``"A"``, ``"B"``, or None when ``p`` is within ``margin`` of the line."""
    v = side_value(p, a, b)
    if v > margin:
        return "B"
    if v < -margin:
        return "A"
    return None


def crossing_direction(prev: Point, cur: Point, a: Point, b: Point) -> str | None:
    """``"a_to_b"`` or ``"b_to_a"`` when the move ``prev → cur`` crosses the segment ``a-b``
    from one strict side to the other; None otherwise (no crossing, or a move that
    only touches the line)."""
    s0, s1 = side_of(prev, a, b), side_of(cur, a, b)
    if s0 is None or s1 is None or s0 == s1:
        return None
    if not segments_intersect(prev, cur, a, b):
        return None
    return f"{s0.lower()}_to_{s1.lower()}"


def point_in_polygon(p: Point, poly: Sequence[Point]) -> bool:
    """Even-odd rule (ray casting).  Points exactly on an edge count as inside."""
    n = len(poly)
    if n < 3:
        return False
    x, y = p
    inside = False
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        if orientation(a, b, p) == 0 and _on_segment(p, a, b):
            return True
        if (a[1] > y) != (b[1] > y):
            x_at = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if x < x_at:
                inside = not inside
    return inside


def distance_to_segment(p: Point, a: Point, b: Point) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    ll = dx * dx + dy * dy
    if ll <= EPS:
        return math.hypot(p[0] - a[0], p[1] - a[1])
    t = max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / ll))
    return math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy))


def distance_to_boundary(p: Point, poly: Sequence[Point]) -> float:
    n = len(poly)
    return min(distance_to_segment(p, poly[i], poly[(i + 1) % n]) for i in range(n))


def polygon_area(poly: Sequence[Point]) -> float:
    """Unsigned area (shoelace)."""
    n = len(poly)
    s = 0.0
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def self_intersection(poly: Sequence[Point]) -> tuple[int, int] | None:
    """The first pair of edges ``(i, j)`` of a closed polygon that intersect (edge ``i``
    runs from point ``i`` to point ``i+1``), other than neighbours sharing their common
    vertex; None for a simple polygon.  Repeated points count as an intersection."""
    n = len(poly)
    edges = [(poly[i], poly[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            adjacent = j == i + 1 or (i == 0 and j == n - 1)
            (p1, p2), (q1, q2) = edges[i], edges[j]
            if adjacent:
                # Neighbours meet at one vertex; they must not overlap beyond it.
                shared = p2 if j == i + 1 else p1
                other_p = p1 if j == i + 1 else p2
                other_q = q2 if j == i + 1 else q1
                if orientation(shared, other_p, other_q) == 0 and (
                    _on_segment(other_q, shared, other_p) or _on_segment(other_p, shared, other_q)
                ):
                    return (i, j)
                continue
            if segments_intersect(p1, p2, q1, q2):
                return (i, j)
    return None


def is_simple_polygon(poly: Sequence[Point]) -> bool:
    return len(poly) >= 3 and self_intersection(poly) is None and polygon_area(poly) > EPS


def bottom_centre(box: Sequence[float]) -> Point:
    """The point of a normalised ``xyxy`` box that touches the ground."""
    x1, _y1, x2, y2 = box[:4]
    return ((x1 + x2) / 2.0, y2)
