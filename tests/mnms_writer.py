"""A writer of the M&Ms layout for tests: the reader (cmri_release.io.mnms) is tested on folders it writes."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cmri_release.core.cohort import Cohort, check_subject_id
from cmri_release.io.nifti import save_nifti
from cmri_release.io.vendors import MNMS_VENDOR_LETTERS
from cmri_release.core.labels import acdc_to_mnms


def write_mnms(cohort: Cohort, out_dir, csv_name: str = "mnms_info.csv") -> Path:
    """Write `cohort` in the M&Ms layout: labelled subjects under Training/Labeled, others under Training/Unlabeled.

    Only the annotated phases exist in a Cohort, so each 4D cine holds two frames (ED at 0, ES at 1)
    and the CSV says ED 0, ES 1; the original frame numbers are not kept.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    letters = {name: letter for letter, name in MNMS_VENDOR_LETTERS.items()}
    rows = [["External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Pathology", "Height", "Weight"]]
    for subject in cohort:
        subject_id = check_subject_id(subject.id, out_dir)
        ed, es = subject.frames["ED"], subject.frames["ES"]
        if ed.image.shape != es.image.shape:
            raise ValueError(f"subject {subject_id}: ED and ES shapes differ")
        folder = out_dir / "Training" / ("Labeled" if subject.has_labels else "Unlabeled") / subject_id
        folder.mkdir(parents=True, exist_ok=False)
        save_nifti(folder / f"{subject_id}_sa.nii.gz", np.stack([ed.image, es.image], axis=-1), subject.affine)
        if subject.has_labels:
            labels = np.stack([acdc_to_mnms(ed.label, subject_id), acdc_to_mnms(es.label, subject_id)], axis=-1)
            save_nifti(folder / f"{subject_id}_sa_gt.nii.gz", labels, subject.affine, label=True)
        rows.append([subject_id, subject.vendor, letters.get(subject.vendor, subject.vendor), subject.centre, 0, 1,
                     subject.group, "" if subject.height is None else subject.height,
                     "" if subject.weight is None else subject.weight])
    csv_path = out_dir / csv_name
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return csv_path

