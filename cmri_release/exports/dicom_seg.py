"""The label maps as DICOM Segmentation objects (highdicom): `dicom-seg/<id>/SEG_<phase>.dcm`.

A SEG references the images it segments, so it is built from the MR images the release wrote to `dicom/`
(one SEG per patient and phase, over that phase's slices). Segments follow ACDC's labels with SNOMED CT
codes (RV: right ventricle; MYO: left ventricle myocardium; LV: left ventricle, its cavity as ACDC draws it),
BINARY, AUTOMATIC, by the algorithm "cmri-release" (family Artificial Intelligence): the masks were made by
the generator's mask model, not by a reader. highdicom is an optional extra (`pip install cmri-release[dicom-seg]`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..core.cohort import PHASES, check_subject_id
from ..core.errors import CmriError

SEG_FOLDER = "dicom-seg"


def _highdicom():
    try:
        import highdicom
        from pydicom.sr.codedict import codes
    except ImportError:
        raise CmriError("the dicom-seg export needs highdicom: pip install 'cmri-release[dicom-seg]'") from None
    return highdicom, codes


def segment_descriptions(hd, codes) -> list:
    algorithm = hd.AlgorithmIdentificationSequence(name="cmri-release", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    structures = ((1, "RV", codes.SCT.RightVentricle), (2, "MYO", codes.SCT.LeftVentricleMyocardium),
                  (3, "LV", codes.SCT.LeftVentricle))
    return [hd.seg.SegmentDescription(segment_number=number, segment_label=label,
                                      segmented_property_category=codes.SCT.AnatomicalStructure,
                                      segmented_property_type=code,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm)
            for number, label, code in structures]


def write_dicom_seg(cohort, release_dir: Path) -> list[Path]:
    import pydicom

    hd, codes = _highdicom()
    release_dir = Path(release_dir)
    descriptions = segment_descriptions(hd, codes)
    written = []
    for subject in cohort:
        sid = check_subject_id(subject.id, release_dir)
        out = release_dir / SEG_FOLDER / sid
        out.mkdir(parents=True)
        for number, phase in enumerate(PHASES, start=1):
            frame = subject.frames.get(phase)
            if frame is None or frame.label is None:
                continue
            files = sorted((release_dir / "dicom" / sid).glob(f"IM_{phase}_*.dcm"))
            if len(files) != frame.label.shape[2]:
                raise ValueError(f"DICOM SEG: {sid} {phase} has {len(files)} MR images in dicom/ for "
                                 f"{frame.label.shape[2]} label slices (write the dicom format first)")
            sources = [pydicom.dcmread(f) for f in files]
            pixels = np.ascontiguousarray(frame.label.transpose(2, 1, 0))  # (x, y, z) -> (frames, rows, cols)
            seg = hd.seg.Segmentation(
                source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=100 + number,
                sop_instance_uid=hd.UID(), instance_number=1, manufacturer="cmri-release",
                manufacturer_model_name="cmri-release synthetic", software_versions=__version__,
                device_serial_number="none", content_label=f"SYNTH_{phase}",
                content_description=f"SYNTHETIC label map ({phase}): not a real patient")
            path = out / f"SEG_{phase}.dcm"
            seg.save_as(path)
            written.append(path)
    return written
