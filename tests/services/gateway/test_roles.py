"""Camera scope patterns: matching, validation, narrowing (services/gateway/roles.py)."""

from __future__ import annotations

import pytest

from services.gateway.roles import CameraScope, lower_role, role_at_least, validate_patterns


@pytest.mark.parametrize(
    ("patterns", "camera", "allowed"),
    [
        (["*"], "any/thing", True),
        (["shop"], "shop/door", True),
        (["shop"], "shop-2/door", False),  # a client id is exact, not a prefix
        (["shop"], "shopx/door", False),
        (["shop/door"], "shop/door", True),
        (["shop/door"], "shop/doorbell", False),  # a camera id is exact too
        (["shop/door"], "shop/door/2", False),
        (["shop-*"], "shop-east/cam", True),
        (["shop-*"], "shop/cam", False),
        (["lab/cam*"], "lab/cam2", True),
        (["lab/cam*"], "lab/door", False),
        (["*/door"], "gate/door", True),
        (["*/door"], "gate/window", False),
        (["a.b"], "axb/cam", False),  # '.' is literal, not a regex
        (["demo/demo-bus", "other"], "other/cam", True),
    ],
)
def test_matching(patterns, camera, allowed):
    assert CameraScope.of(patterns).allows(camera) is allowed


def test_clients_visible_through_their_cameras():
    s = CameraScope.of(["demo/demo-bus", "shop-*"])
    assert s.allows_client("demo") and s.allows_client("shop-1")
    assert not s.allows_client("other") and not s.allows_client("demox")


@pytest.mark.parametrize(
    "bad", [[], [""], ["a b"], ["x?"], ["[ab]"], ["/x"], ["x/"], ["a//b"], ["a\\b"], ["x" * 129]]
)
def test_bad_patterns_are_refused(bad):
    with pytest.raises(ValueError):
        validate_patterns(bad)


def test_narrowing_is_an_intersection_and_covers_is_conservative():
    owner = CameraScope.of(["demo", "lab/cam*"])
    assert owner.covers(["demo/demo-bus", "demo", "lab/cam1", "lab/cam*"])
    for wider in (["*"], ["de*"], ["lab"], ["lab/*"], ["other"], ["*/cam1"]):
        assert not owner.covers(wider), wider
    token = owner.narrowed(["demo/demo-bus", "other"])
    assert token.allows("demo/demo-bus")
    assert not token.allows("other/cam")  # not in the owner's scope: the token can't add it
    assert not token.allows("demo/demo-car")
    assert CameraScope().narrowed(None).everything and not token.everything


def test_roles_order():
    assert role_at_least("admin", "operator") and role_at_least("operator", "operator")
    assert not role_at_least("viewer", "operator") and not role_at_least(None, "viewer")
    assert not role_at_least("root", "viewer")
    assert lower_role("admin", "viewer") == "viewer"
