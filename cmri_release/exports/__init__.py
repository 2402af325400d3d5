"""Export formats beyond the cohort layout (`data/`, NIfTI) and the DICOM images (`dicom/`).

One module per consumer, each writing into a release's temporary folder before the atomic rename:

- `nnunet`: an nnU-Net v2 raw dataset (`nnunet/Dataset900_cmriSynthetic/` with `imagesTr`, `labelsTr`,
  `dataset.json`), one case per patient and phase, as nnU-Net's own ACDC converter makes them;
- `monai`: a MONAI datalist (`monai_datalist.json`, "image"/"label" keys, paths relative to the release);
- `dicom-seg`: the label maps as DICOM Segmentation objects (highdicom, an optional extra) that reference
  the MR images of `dicom/`, which it therefore needs.

`EXPORTERS` maps a format name to its writer `(cohort, release_dir) -> list of written paths`; the release's
export calls them in `ORDER` (after `data/` and `dicom/`). A writer's heavy imports happen when it runs.
"""
from __future__ import annotations

import importlib
from pathlib import Path

SYNTHETIC_MARK = "SYNTHETIC cmri-release: not a real patient"  # NIfTI descrip (80 bytes at most)

EXPORTERS = {  # format -> "module:function", imported when used
    "nnunet": "cmri_release.exports.nnunet:write_nnunet",
    "monai": "cmri_release.exports.monai:write_monai_datalist",
    "dicom-seg": "cmri_release.exports.dicom_seg:write_dicom_seg",
}
ORDER = ("nnunet", "monai", "dicom-seg")
NEEDS = {"dicom-seg": "dicom"}  # a format that references the files of another


def exporter(name: str):
    if name not in EXPORTERS:
        raise ValueError(f"unknown export format {name!r}; known: nifti, dicom, {', '.join(EXPORTERS)}")
    module, attr = EXPORTERS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def write_formats(cohort, release_dir: Path, formats) -> dict[str, list[Path]]:
    """Every extra format asked for, in ORDER; returns the files each wrote (relative to release_dir)."""
    out = {}
    for name in ORDER:
        if name in formats:
            out[name] = [Path(p).relative_to(release_dir) for p in exporter(name)(cohort, Path(release_dir))]
    return out
