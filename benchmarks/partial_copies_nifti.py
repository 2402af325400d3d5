"""A synthetic cohort folder for the CLI with a few training slices hidden inside new patients (docs/privacy-checks.md,
"A few copied slices"): 90 new patients, and 10 mixed patients, each of which keeps every EVERY-th slice of a
training patient (ED and ES volumes, label maps with them), with white noise of sd NOISE x (p99 - p1) on them when
given, and takes its other slices from one of the last 10 new patients, resampled in mm onto the training
patient's grid and shifted so that the two hearts' centroids agree.

    cmri-release phantom train --subjects 100 --seed 11
    cmri-release phantom holdout --subjects 100 --seed 12
    cmri-release phantom new100 --subjects 100 --seed 13
    python benchmarks/partial_copies_nifti.py train new100 syn_q4 4 [NOISE]
    cmri-release audit --train train --holdout holdout --synthetic syn_q4 --out a_q4 --only privacy
"""
import shutil
import sys
from pathlib import Path
import nibabel as nib
import numpy as np
from scipy import ndimage

train, new, out, every = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
noise = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0  # sd of white noise on the kept slices, share of p1-p99
rng = np.random.default_rng(5)
shutil.rmtree(out, ignore_errors=True)
out.mkdir()
news = sorted(new.iterdir())
for p in news[:90]:
    shutil.copytree(p, out / p.name)


def frames(p):
    gts = sorted(p.glob("*_gt.nii.gz"))
    return [(Path(str(g).replace("_gt.nii.gz", ".nii.gz")), g) for g in gts]


for j, (t, n) in enumerate(zip(sorted(train.iterdir())[:10], news[90:])):
    name = f"mix-{j}"
    (out / name).mkdir()
    info = (t / "Info.cfg").read_text()
    (out / name / "Info.cfg").write_text(info)
    for (ti, tg), (ni, ng) in zip(frames(t), frames(n)):
        timg, tlab, nimg, nlab = (nib.load(f) for f in (ti, tg, ni, ng))
        td, tl = np.asarray(timg.dataobj), np.asarray(tlab.dataobj)
        nd, nl = np.asarray(nimg.dataobj), np.asarray(nlab.dataobj)
        ts, ns = float(timg.header.get_zooms()[0]), float(nimg.header.get_zooms()[0])
        tc = np.array(ndimage.center_of_mass(tl > 0)[:2])
        nc = np.array(ndimage.center_of_mass(nl > 0)[:2])
        od, ol = td.astype(np.float32), tl.copy()
        if noise:
            lo, hi = np.percentile(td, [1, 99])
            od = od + rng.normal(0.0, noise * (hi - lo), od.shape).astype(np.float32)
        h, w, z = td.shape
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        # a training-grid pixel (i, j) sits (i - tc) * ts mm from the training heart; the same mm from the new heart
        coords = [nc[0] + (ii - tc[0]) * ts / ns, nc[1] + (jj - tc[1]) * ts / ns]
        for k in range(z):
            if k % every == 0:
                continue  # a verbatim training slice
            kn = min(int(round(k * (nd.shape[2] - 1) / max(z - 1, 1))), nd.shape[2] - 1)
            od[..., k] = ndimage.map_coordinates(nd[..., kn].astype(np.float64), coords, order=1, mode="nearest")
            ol[..., k] = ndimage.map_coordinates(nl[..., kn], coords, order=0, mode="nearest").astype(tl.dtype)
        od = np.clip(od, 0, None).astype(np.float32)
        for data, src, f in ((od, timg, ti), (ol, tlab, tg)):
            nib.save(nib.Nifti1Image(data, src.affine, src.header), out / name / f.name.replace(t.name, name))
print("ok", out)
