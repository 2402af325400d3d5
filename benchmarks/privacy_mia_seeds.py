"""Membership inference on phantom cohorts, seed after seed: 100 train / 100 holdout / 100 synthetic patients (32 px);
fresh patients of another seed as the honest "synthetic" cohort, and exact copies of 20% / 40% of the training
patients. Usage: python benchmarks/privacy_mia_seeds.py pixels FIRST_SEED END_SEED (one JSON line per seed)."""
import sys, time, resource, json
import numpy as np
from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
from cmri_release.core.sliceset import SliceSet
from auditors.base import AuditContext
from auditors.privacy.mia import MembershipInference

spaces = sys.argv[1].split(",")
seeds = range(int(sys.argv[2]), int(sys.argv[3]))
cfg = PreprocessConfig(size=32)
for seed in seeds:
    real = cohort_to_slices(make_phantom(200, seed=100 + seed), cfg)
    subs = real.subjects
    train, hold = real.for_subjects(subs[0::2]), real.for_subjects(subs[1::2])
    fresh = cohort_to_slices(make_phantom(100, seed=500 + seed), cfg)
    out = {"seed": seed}
    for kind in ("honest", "copies20", "copies40"):
        k = {"honest": 0, "copies20": 20, "copies40": 40}[kind]
        if k:
            tr_sub = train.subjects[:k]
            cp = train.for_subjects(tr_sub)
            cp = SliceSet(images=cp.images, labels=cp.labels, subject_ids=np.char.add("copy-", cp.subject_ids.astype(str)),
                          vendors=cp.vendors, phases=cp.phases, slice_pos=cp.slice_pos, slice_index=cp.slice_index,
                          has_label=cp.has_label, spacing_mm=cp.spacing_mm)
            syn = SliceSet.concat([fresh.for_subjects(fresh.subjects[:100 - k]), cp])
        else:
            syn = fresh
        t, c = time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
        r = MembershipInference().run(AuditContext(train=train, holdout=hold, synthetic=syn, seed=seed, quiet=True,
                                                   options={"feature_spaces": spaces}))
        out[kind] = {ch.name: [ch.verdict.value, round(ch.estimate, 3), round(ch.lower, 3), round(ch.upper, 3)]
                     for ch in r.checks}
        out[kind]["wall_s"] = round(time.time() - t, 1)
        out[kind]["cpu_s"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_utime - c, 1)
        out[kind]["attack"] = r.metrics["gated_attacks"][0]["label"]
    print(json.dumps(out), flush=True)
