"""A plain DICOM writer for tests: a subject's ED and ES frames as a two-frame cine.

This is not the release's DICOM export (that one de-identifies and marks the data as derived);
it writes classic MR Image Storage files, one per slice and frame, 16-bit with RescaleSlope and
RescaleIntercept, so that the reader can be tested on what scanners produce. `tags` lets a test
plant identifiers (PatientName, dates, private tags) to prove the reader drops them.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cmri_release.core.cohort import PHASES, Subject

FRAME_INTERVAL_MS = 40.0


def write_dicom_series(subject: Subject, folder, *, tags: dict | None = None, private: dict | None = None,
                       manufacturer: str = "SIEMENS", shuffle_seed: int | None = None,
                       series_per_slice: bool = False) -> list[Path]:
    """Write ED then ES as cine frames 1 and 2 of one short-axis stack; returns the files written.

    `shuffle_seed` gives random file names written in random order; `series_per_slice` writes each
    slice as its own series, as many scanners do. `private` maps (group, element) -> value for
    private tags (a creator is added in the group).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ subject.affine  # NIfTI RAS world -> DICOM LPS patient space
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_cos, col_cos = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    volumes = [subject.frames[p].image for p in PHASES]
    low = float(min(v.min() for v in volumes))
    high = float(max(v.max() for v in volumes))
    slope = (high - low) / 65535.0 or 1.0
    study_uid, frame_of_ref = generate_uid(), generate_uid()
    n_slices = volumes[0].shape[2]
    series_uids = [generate_uid() for _ in range(n_slices if series_per_slice else 1)]
    jobs = [(t, k) for t in range(len(volumes)) for k in range(n_slices)]
    rng = random.Random(shuffle_seed)
    if shuffle_seed is not None:
        rng.shuffle(jobs)
    written = []
    for number, (t, k) in enumerate(jobs):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Modality, ds.Manufacturer = "MR", manufacturer
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, frame_of_ref
        ds.SeriesInstanceUID = series_uids[k if series_per_slice else 0]
        ds.SeriesNumber = k + 1 if series_per_slice else 1
        ds.InstanceNumber = t * n_slices + k + 1
        ds.TriggerTime = f"{t * FRAME_INTERVAL_MS:.1f}"
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row_cos, *col_cos)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]  # (between rows, between columns)
        ds.SliceThickness = f"{spacing[2]:.10g}"
        ds.Rows, ds.Columns = volumes[t].shape[1], volumes[t].shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{low:.10g}"
        stored = np.round((volumes[t][:, :, k].T - low) / float(ds.RescaleSlope))
        ds.PixelData = np.clip(stored, 0, 65535).astype("<u2").tobytes()
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        for (group, element), value in (private or {}).items():
            ds.add_new((group, 0x0010), "LO", "CMRI TEST")
            ds.add_new((group, 0x1000 | (element & 0xFF)), "LO", value)
        name = f"{rng.getrandbits(64):016x}" if shuffle_seed is not None else f"IM{number:05d}"
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
