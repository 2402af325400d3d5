"""The one feature-space registry: every space by name, built once per audit, unknown names refused."""
from __future__ import annotations

import pytest

from auditors.base import AuditContext
from auditors.features import FEATURE_SPACES, PRIVACY_SPACES, FeatureSpace, get_feature_space, register_feature_space
from auditors.features.spaces import spaces_for


def test_the_built_in_spaces_and_who_uses_them():
    assert list(FEATURE_SPACES) == ["pixels", "embedding", "segmenter"]
    assert PRIVACY_SPACES == ("pixels", "embedding") and spaces_for("fidelity") == ("embedding", "segmenter")


def test_a_space_is_built_once_per_audit_and_unknown_names_are_refused(heart_slices):
    s = heart_slices(2, size=16)
    ctx = AuditContext(train=s, holdout=s, synthetic=s, options={"pixel_size": 8})
    assert get_feature_space(ctx, "pixels") is get_feature_space(ctx, "pixels")
    with pytest.raises(ValueError, match="unknown feature space 'pixel'; known: embedding, pixels, segmenter"):
        get_feature_space(ctx, "pixel")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_feature_space(FeatureSpace("pixels", lambda ctx: None, "again", ("privacy",)))
