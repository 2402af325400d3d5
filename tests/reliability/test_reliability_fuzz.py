"""Fuzzing the readers and the spec parser, bounded for CI (a few seconds each).

Whatever bytes or text they are given, they either return a value or raise one of the project's `CmriError`
subclasses (which the command line prints as one line, exit 2); never another exception type, which would be a
traceback or an "unexpected" error. Mutations start from valid files, so that most examples get past the first
check and reach the deeper ones.
"""
from __future__ import annotations

import gzip
import logging
import tomllib
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmri_release.core.errors import CmriError
from cmri_release.io.dicom import read_header, read_pixels
from dicom_series_writer import write_dicom_series
from cmri_release.io.infocfg import KEY_ORDER, read_info_cfg
from cmri_release.io.mnms import MNMS_REQUIRED, read_csv_rows
from cmri_release.io.nifti import load_nifti, save_nifti
from cmri_release.spec import parse_spec, spec_from_dict
from reliability_data import ring_subject

FUZZ = settings(max_examples=150, deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


class _Records(logging.Handler):
    """Log records that a command line process would print on stderr: those reaching a stream handler, or no
    handler at all (Python then prints WARNING and above itself). pydicom's NullHandler keeps its own quiet."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        logger, handled = logging.getLogger(record.name), False
        while logger is not None:
            for handler in logger.handlers:
                if handler is self or type(handler).__module__.startswith("_pytest"):
                    continue
                handled = True
                if isinstance(handler, logging.StreamHandler) and record.levelno >= handler.level:
                    self.records.append(record)
                    return
            if not logger.propagate:
                break
            logger = logger.parent
        if not handled:
            self.records.append(record)


def only_cmri_errors(call):
    """Run `call`; a CmriError is an acceptable refusal, anything else fails the test (by propagating). Either way
    nothing may be logged or warned on the way: the command line's stderr holds the one error line only."""
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return call()
            except CmriError as exc:
                assert str(exc).strip() and "\n" not in str(exc), repr(exc)  # one line for the command line
                return None
            finally:
                assert not caught, [str(w.message) for w in caught]
    finally:
        logging.getLogger().removeHandler(records)
        assert not records.records, [r.getMessage() for r in records.records]


def mutate(raw: bytes, edits: list[tuple[int, int]], cut: int | None, limit: int | None = None) -> bytes:
    data = bytearray(raw)
    for offset, value in edits:
        data[offset % (limit or len(data))] = value
    return bytes(data[:cut] if cut is not None else data)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=12)
CUTS = st.one_of(st.none(), st.integers(0, 2000))


# --------------------------------------------------------------------------------------------------------------
# Info.cfg

LINE = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(KEY_ORDER + ("PatientName", "ed", "")),
              st.one_of(st.integers(-5, 40).map(str), st.floats(allow_nan=True).map(str), st.text(max_size=20))),
    st.text(max_size=30))


@FUZZ
@given(text=st.lists(LINE, max_size=10).map("\n".join), raw=st.one_of(st.none(), st.binary(max_size=300)))
def test_info_cfg(scratch, text, raw):
    path = scratch / "Info.cfg"
    if raw is None:
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(raw)
    info = only_cmri_errors(lambda: read_info_cfg(path))
    if info is not None:
        assert info.ed != info.es and info.ed >= 1 and info.es >= 1


# --------------------------------------------------------------------------------------------------------------
# NIfTI: header bytes and whole files mutated, plain and gzipped

@pytest.fixture(scope="module")
def nifti_bytes(scratch) -> dict[str, bytes]:
    subject = ring_subject("f", shape=(8, 8, 2))
    image = save_nifti(scratch / "image.nii", subject.frames["ED"].image, subject.affine)
    label = save_nifti(scratch / "label.nii", subject.frames["ED"].label, subject.affine, label=True)
    return {"image": image.read_bytes(), "label": label.read_bytes()}


@FUZZ
@given(kind=st.sampled_from(["image", "label"]), header_edits=EDITS, cut=CUTS,
       packing=st.sampled_from(["nii", "gz", "gz-bytes"]))
def test_nifti_header_and_file(scratch, nifti_bytes, kind, header_edits, cut, packing):
    raw = mutate(nifti_bytes[kind], header_edits, None, limit=352)  # edits land in the 348-byte header (+ext)
    if packing == "nii":
        path, payload = scratch / "fuzz.nii", raw[:cut] if cut is not None else raw
    elif packing == "gz":
        path, payload = scratch / "fuzz.nii.gz", gzip.compress(raw[:cut] if cut is not None else raw)
    else:  # the compressed stream itself damaged
        path, payload = scratch / "fuzz.nii.gz", mutate(gzip.compress(raw), header_edits[:2], cut)
    path.write_bytes(payload)
    result = only_cmri_errors(lambda: load_nifti(path, label=kind == "label"))
    if result is not None:
        data, affine = result
        assert data.ndim == 3 and affine.shape == (4, 4) and np.all(np.isfinite(affine))
        if kind == "image":
            assert data.dtype == np.float32 and np.all(np.isfinite(data))
        else:
            assert data.dtype == np.uint8 and data.max() <= 3


@FUZZ
@given(dims=st.lists(st.integers(-40000, 40000), min_size=8, max_size=8),
       datatype=st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 2048, 2304, 9999]),
       vox_offset=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 1 << 40)),
       pixdim=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=8, max_size=8))
def test_nifti_header_fields(scratch, nifti_bytes, dims, datatype, vox_offset, pixdim):
    """The header fields that size and place the data, set to anything a 348-byte header can hold."""
    header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(nifti_bytes["image"]), check=False)
    for field, value in (("dim", dims), ("datatype", datatype), ("vox_offset", vox_offset), ("pixdim", pixdim)):
        try:
            header[field] = value
        except (ValueError, OverflowError, TypeError):
            pass  # the field cannot hold it; keep the old value
    path = scratch / "fields.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + nifti_bytes["image"][348:]))
    only_cmri_errors(lambda: load_nifti(path))


# --------------------------------------------------------------------------------------------------------------
# DICOM

@pytest.fixture(scope="module")
def dicom_bytes(scratch) -> bytes:
    files = write_dicom_series(ring_subject("d", shape=(8, 8, 2)), scratch / "dicom")
    return files[0].read_bytes()


@FUZZ
@given(edits=EDITS, cut=st.one_of(st.none(), st.integers(0, 1200)))
def test_dicom_file(scratch, dicom_bytes, edits, cut):
    path = scratch / "fuzz.dcm"
    path.write_bytes(mutate(dicom_bytes, edits, cut))
    image = only_cmri_errors(lambda: read_header(path))
    if image is not None:
        pixels = only_cmri_errors(lambda: read_pixels(image))
        assert pixels is None or (pixels.dtype == np.float32 and np.all(np.isfinite(pixels)))


# --------------------------------------------------------------------------------------------------------------
# M&Ms metadata CSV

CELL = st.one_of(st.text(max_size=8), st.integers(-3, 40).map(str), st.sampled_from(["", "A", "nan", "1e400"]))


@FUZZ
@given(header=st.lists(st.sampled_from(MNMS_REQUIRED + ("VendorName", "Centre", "x")), max_size=6),
       rows=st.lists(st.lists(CELL, max_size=7), max_size=5), raw=st.one_of(st.none(), st.binary(max_size=200)))
def test_mnms_csv(scratch, header, rows, raw):
    path = scratch / "info.csv"
    if raw is not None:
        path.write_bytes(raw)
    else:
        lines = [",".join(header)] + [",".join(c.replace("\n", " ").replace("\r", " ") for c in row) for row in rows]
        path.write_text("\n".join(lines), encoding="utf-8")
    only_cmri_errors(lambda: read_csv_rows(path, MNMS_REQUIRED))


# --------------------------------------------------------------------------------------------------------------
# The release spec: any text, and any TOML document built from the spec's own keys

KEYS = ["seed", "data", "generator", "privacy", "synthesis", "thresholds", "audit", "export", "size", "train",
        "holdout", "test", "cohort", "phantom", "split", "subjects", "vendors", "name", "epochs", "minutes", "device",
        "model", "dp", "epsilon", "delta", "max_grad_norm", "accountant", "masks", "groups", "utility_epochs", "out",
        "formats", "audit_dir", "privacy.mia_auc", "fidelity.mask_dice_ratio", "unknown"]
SCALARS = st.one_of(st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["", ".", "..", "flow", "cpu", "cuda:0", "nifti", "dicom", "privacy", "prv",
                                     "holdout", "~", "/", "\x00", "release"]), st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                      max_leaves=20)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
def test_spec_document(scratch, doc):
    only_cmri_errors(lambda: spec_from_dict(doc, "fuzz.toml", scratch))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.sampled_from(["[data]\nsize = 16\n[data.phantom]\nsubjects = 3\n"])
                      .flatmap(lambda base: st.text(max_size=40).map(lambda extra: base + extra))))
def test_spec_text(scratch, text):
    only_cmri_errors(lambda: parse_spec(text, "fuzz.toml", scratch))


def test_the_fuzzers_reach_past_the_first_check(scratch, nifti_bytes):
    """Unmutated inputs are accepted, so the examples above exercise the later checks too."""
    (scratch / "ok.nii").write_bytes(nifti_bytes["image"])
    assert load_nifti(scratch / "ok.nii")[0].shape == (8, 8, 2)
    doc = tomllib.loads("[data]\nsize = 16\n[data.phantom]\nsubjects = 3\n")
    assert spec_from_dict(doc, "ok.toml", scratch).data.phantom.subjects == 3
