"""The one registry of feature spaces: every space any auditor compares slices in, by name.

A space is built once per audit from the context (`build(ctx)` returns an object with `transform((N, H, W) images)
-> (N, D) float32`), cached in the context under its name, and says which groups use it by default. The privacy
auditors search nearest neighbours in L2-normalised spaces (inner product = similarity); fidelity standardises its
spaces itself (auditors.fidelity.spaces). Add a space with one `register_feature_space` call in its own module,
imported below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class FeatureSpace:
    name: str
    build: Callable[[Any], Any]  # AuditContext -> extractor with .transform(images)
    description: str
    groups: tuple[str, ...]  # the audit groups that compare slices in it by default


FEATURE_SPACES: dict[str, FeatureSpace] = {}


def register_feature_space(space: FeatureSpace) -> FeatureSpace:
    if space.name in FEATURE_SPACES:
        raise ValueError(f"feature space {space.name!r} is registered twice")
    FEATURE_SPACES[space.name] = space
    return space


def get_feature_space(ctx, name: str):
    """The extractor for space `name`, built once per audit."""
    if name not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {name!r}; known: {', '.join(sorted(FEATURE_SPACES))}")
    return ctx.shared(name, lambda: FEATURE_SPACES[name].build(ctx))


def spaces_for(group: str) -> tuple[str, ...]:
    """The spaces `group` compares slices in by default, in registration order."""
    return tuple(name for name, space in FEATURE_SPACES.items() if group in space.groups)
