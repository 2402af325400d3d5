"""White-box scores, raw and difficulty-calibrated against reference generators (offline LiRA).

Offline LiRA (Carlini et al. 2022; Ye et al. 2022, "enhanced" attacks): some patients are easy to fit whoever
trained on them. A patient's white-box score (the generator's `membership_scores`) is judged against the score
that generators which never saw the patient give it: calibrated = target score - mean reference score (divided by
the references' spread when there are at least `PER_SLICE_SPREAD` of them; with fewer, a common spread, which does
not change the ranking, is used).

The references are built like the audited generator (its registered class and the settings in its model card) and
trained for the same number of epochs (passes over each patient), on real patients that are in neither the
training set nor the half being scored: the holdout is cut in the same two halves as the cross-fitted attack
selection (auditors.privacy.mia_stats), references trained on one half score the members and non-members of the
other. Every evaluated non-member is thus outside every reference that scores it, as a member is outside them too.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math

import numpy as np

from auditors.base import AuditContext
from cmri_release.core.parallel import map_jobs
from cmri_release.core.sliceset import SliceSet

PER_SLICE_SPREAD = 4  # references needed before a per-slice standard deviation is estimated


def slice_scores(scorer, slices: SliceSet, seed: int) -> np.ndarray:
    """(N,) white-box scores, checked: a wrong shape or a non-finite score fails closed."""
    s = np.asarray(scorer.membership_scores(slices, seed), dtype=np.float64)
    if s.shape != (len(slices),) or not np.isfinite(s).all():
        raise ValueError(f"the generator's membership_scores returned shape {s.shape} (expected ({len(slices)},)) "
                         "or non-finite values")
    return s


def reference_recipe(ctx: AuditContext) -> tuple[str, dict, int] | str:
    """(generator name, settings, epochs) to train references like the audited generator, or why that is impossible."""
    card = ctx.model_card or getattr(ctx.generator, "model_card", None) or {}
    name = card.get("generator")
    settings = card.get("settings")
    if not isinstance(settings, dict):
        return "the model card records no generator settings"
    # The registry is handed down by the application (auditors never import generators): a fresh model of the
    # card's name and settings must be of the audited generator's own class, or no reference is like it.
    try:
        probe = ctx.generator_factory(str(name), dict(settings)) if ctx.generator_factory else None
    except ValueError:
        probe = None
    if probe is None or type(probe) is not type(ctx.generator):
        return "the audited generator is not one of the registered generators: no reference can be built like it"
    epochs = float(ctx.option("mia_reference_epochs"))
    if epochs <= 0:
        training = card.get("training") or {}
        budget = (training.get("budget") or {}).get("epochs")
        epochs = budget if isinstance(budget, (int, float)) and budget else training.get("epochs")
    if not isinstance(epochs, (int, float)) or not math.isfinite(epochs) or epochs <= 0:
        return "the model card records no training budget (epochs): set the option mia_reference_epochs"
    return str(name), dict(settings), max(1, int(round(epochs)))


def fit_reference(job: tuple[SliceSet, int], *, factory, name: str, settings: dict, epochs: int, device: str,
                  quiet: bool):
    """One reference generator: a fresh model of the recipe fitted on `job` = (patients' slices, seed)."""
    data, seed = job
    model = factory(name, dict(settings))
    model.fit(data, epochs=epochs, device=device, seed=seed, quiet=quiet)
    return model


def reference_jobs(holdout: SliceSet, nonmember_half: np.ndarray, seed: int, k_models: int
                   ) -> list[tuple[SliceSet, int]]:
    """(slices, seed) of every reference generator, half 0's first: `k_models` per half h, trained on the holdout
    patients of the OTHER half (so every non-member a reference scores is outside it)."""
    codes = holdout.subject_codes()[0]
    jobs = []
    for h in (0, 1):
        data = holdout.select(np.isin(codes, np.flatnonzero(nonmember_half == 1 - h)))
        jobs += [(data, seed + 1000 * (h + 1) + k) for k in range(k_models)]
    return jobs


def references_key(recipe, jobs: list[tuple[SliceSet, int]]) -> str:
    """The audit cache's key for the references of `recipe` trained as `jobs`: the same key, the same weights (each
    job's seed and patients, the recipe's generator, settings and epochs), so references trained ahead (beside the
    audited generator, cmri_release.release) are used only when they are the ones the attack would train."""
    name, settings, epochs = recipe
    ident = [name, settings, epochs, [(sorted(str(s) for s in data.subjects), seed) for data, seed in jobs]]
    return "lira_references:" + hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def train_references(ctx: AuditContext, holdout_half: np.ndarray, recipe) -> list[list]:
    """Per half h: `mia_reference_models` generators trained on the holdout patients of the OTHER half, side by side
    on the audit's executor (one CPU core each: a second intra-op thread buys one training little). Each has its
    own seed and the weights do not depend on what trains beside it (core.parallel.seeded_global_rng). Taken from
    the audit's cache when trained ahead under the same key (references_key)."""
    name, settings, epochs = recipe
    k_models = ctx.option("mia_reference_models")
    jobs = reference_jobs(ctx.holdout, holdout_half, ctx.seed, k_models)
    fit = functools.partial(fit_reference, factory=ctx.generator_factory, name=name, settings=settings,
                            epochs=epochs, device=ctx.device, quiet=True)
    models = ctx.shared(references_key(recipe, jobs), lambda: ctx.map_jobs(fit, jobs, desc="LiRA references"))
    return [models[:k_models], models[k_models:]]


def white_box(ctx: AuditContext, member_half: np.ndarray, nonmember_half: np.ndarray, references: list[list] | None
              ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-slice scores of train and holdout slices: {"white_box": (train, holdout)} and, with references,
    {"lira": ...}. Each half's slices are scored as one set, with one seed, by the target and its references, so
    that the noise a score draws is the same for both and cancels in the difference."""
    tr_codes, _ = ctx.train.subject_codes()
    ho_codes, _ = ctx.holdout.subject_codes()
    out = {"white_box": (np.empty(len(ctx.train)), np.empty(len(ctx.holdout)))}
    if references is not None:
        out["lira"] = (np.empty(len(ctx.train)), np.empty(len(ctx.holdout)))
    parts = []  # (half, split, rows of that split the half's references score)
    for h in (0, 1):
        rows = (np.isin(tr_codes, np.flatnonzero(member_half == h)),
                np.isin(ho_codes, np.flatnonzero(nonmember_half == h)))
        parts += [(h, split, mask) for split, mask in enumerate(rows) if mask.any()]
    splits = (ctx.train, ctx.holdout)

    def score(job) -> tuple[np.ndarray, np.ndarray | None]:
        h, split, mask = job
        part = splits[split].select(mask)
        target = slice_scores(ctx.generator, part, ctx.seed)
        ref = None if references is None else np.stack([slice_scores(r, part, ctx.seed) for r in references[h]])
        return target, ref

    # the four parts side by side (one CPU core each) when the generator may be called from several threads at once
    workers = None if all(getattr(g, "parallel_sampling", False) for g in _scorers(ctx.generator, references)) else 1
    for (h, split, mask), (target, ref) in zip(parts, map_jobs(score, parts, workers=workers, device=ctx.device,
                                                               quiet=ctx.quiet, desc="white-box scores")):
        out["white_box"][split][mask] = target
        if ref is not None:
            calibrated = target - ref.mean(axis=0)
            if len(ref) >= PER_SLICE_SPREAD:
                calibrated /= np.maximum(ref.std(axis=0, ddof=1), 1e-12)
            out["lira"][split][mask] = calibrated
    return out


def _scorers(target, references: list[list] | None) -> list:
    return [target] + [r for half in (references or []) for r in half]
