"""The cohort layout (ACDC's), read and written, and real ACDC as distributed.

One folder per subject: `<id>/Info.cfg`, `<id>/<id>_frameXX.nii.gz` and, when annotated,
`<id>/<id>_frameXX_gt.nii.gz`, with XX the 1-based ED and ES frame numbers of Info.cfg padded to
two digits. Real ACDC (`database/{training,testing}/patientNNN/`) is the same layout one or two
folders down; its `patientNNN_4d.nii.gz` cine is ignored.

ACDC was acquired on Siemens scanners (1.5 T and 3 T) at one centre, but its Info.cfg has no
`Vendor` or `Centre` key; a subject without those keys gets vendor and centre "unknown" rather
than a guess, so that a vendor-stratified audit never mixes an assumed vendor with a measured one.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..core.cohort import PHASES, Frame, Subject, check_subject_id
from ..core.errors import InputError
from .infocfg import InfoCfg, read_info_cfg, write_info_cfg
from .nifti import check_same_grid, load_nifti, save_nifti

ACDC_SPLITS = ("training", "testing")
_FRAME_FILE = re.compile(r"^(?P<id>.+)_frame\d+(_gt)?\.nii(\.gz)?$")


def frame_file(folder: Path, subject_id: str, index: int, label: bool) -> Path:
    return folder / f"{subject_id}_frame{index:02d}{'_gt' if label else ''}.nii.gz"


def looks_like_subject_folder(folder: Path) -> bool:
    """A folder holding an Info.cfg or ACDC-named frame files."""
    if not folder.is_dir() or folder.name.startswith("."):
        return False
    if (folder / "Info.cfg").exists():
        return True
    return any(_FRAME_FILE.match(p.name) for p in folder.iterdir())


def subject_folders(root: Path) -> list[Path]:
    """Subject folders of the cohort layout, or of ACDC's `database/{training,testing}` tree."""
    root = Path(root)
    base = root / "database" if (root / "database").is_dir() else root
    splits = [base / s for s in ACDC_SPLITS if (base / s).is_dir()]
    parents = splits or [base]
    folders = []
    for parent in parents:
        folders += sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    return folders


def read_subject_folder(folder) -> Subject:
    """One subject of the cohort layout. Labels are optional (an image-only subject has label None)."""
    folder = Path(folder)
    subject_id = check_subject_id(folder.name, folder)
    info = read_info_cfg(folder / "Info.cfg")
    frames: dict[str, Frame] = {}
    affine = None
    for phase, index in (("ED", info.ed), ("ES", info.es)):
        image_path = frame_file(folder, subject_id, index, label=False)
        if not image_path.exists():
            raise InputError(image_path, f"missing {phase} image named by Info.cfg ({phase}: {index})")
        image, image_affine = load_nifti(image_path)
        if affine is None:
            affine, first = image_affine, image_path
        else:
            check_same_grid(affine, image_affine, first.name, image_path)
            ed_shape = frames["ED"].image.shape
            if image.shape != ed_shape:
                raise InputError(image_path, f"shape {image.shape} differs from {first.name}'s {ed_shape}")
        label = None
        label_path = frame_file(folder, subject_id, index, label=True)
        if label_path.exists():
            label, label_affine = load_nifti(label_path, label=True)
            if label.shape != image.shape:
                raise InputError(label_path, f"label shape {label.shape} differs from image shape {image.shape}")
            check_same_grid(image_affine, label_affine, image_path.name, label_path)
        frames[phase] = Frame(phase=phase, index=index, image=image, label=label)
    return Subject(id=subject_id, frames=frames, affine=affine, vendor=info.vendor, centre=info.centre,
                   group=info.group, height=info.height, weight=info.weight, n_frames=info.n_frames)


def write_subject_folder(subject: Subject, out_dir, descrip: str = "") -> Path:
    """Write one subject in the cohort layout under `out_dir/<id>/`; refuses to overwrite. `descrip` goes into
    every NIfTI header (the synthetic mark)."""
    out_dir = Path(out_dir)
    subject_id = check_subject_id(subject.id, out_dir)
    folder = out_dir / subject_id
    if folder.exists():
        raise InputError(folder, "already exists; refusing to overwrite a subject folder")
    missing = [p for p in PHASES if p not in subject.frames]
    if missing:
        raise ValueError(f"subject {subject_id} has no {missing} frame; the cohort layout needs ED and ES")
    ed, es = subject.frames["ED"].index, subject.frames["ES"].index
    if ed == es:
        raise ValueError(f"subject {subject_id}: ED and ES have the same frame number {ed}")
    folder.mkdir(parents=True)
    write_info_cfg(folder / "Info.cfg", InfoCfg(
        ed=ed, es=es, group=subject.group, height=subject.height, weight=subject.weight,
        n_frames=subject.n_frames, vendor=subject.vendor, centre=subject.centre))
    for phase in PHASES:
        frame = subject.frames[phase]
        save_nifti(frame_file(folder, subject_id, frame.index, label=False), frame.image, subject.affine,
                   descrip=descrip)
        if frame.label is not None:
            save_nifti(frame_file(folder, subject_id, frame.index, label=True), frame.label, subject.affine,
                       label=True, descrip=descrip)
    return folder
