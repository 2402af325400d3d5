import gzip

import nibabel as nib
import numpy as np
import pytest

from cmri_release.core.errors import InputError
from cmri_release.io.nifti import MAX_VOXELS, load_nifti, save_nifti


def _raises(path, words, **kw):
    with pytest.raises(InputError) as err:
        load_nifti(path, **kw)
    assert err.value.path == str(path)
    assert words in err.value.problem
    assert "\n" not in str(err.value)
    return err.value


def test_image_and_label_round_trip_exactly(tmp_path, affine):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 30, (16, 12, 3)).astype(np.float32)
    label = rng.integers(0, 4, (16, 12, 3)).astype(np.uint8)
    save_nifti(tmp_path / "i.nii.gz", image, affine)
    save_nifti(tmp_path / "l.nii.gz", label, affine, label=True)
    got, got_affine = load_nifti(tmp_path / "i.nii.gz")
    np.testing.assert_array_equal(got, image)
    np.testing.assert_allclose(got_affine, affine, atol=1e-5)
    got_label, _ = load_nifti(tmp_path / "l.nii.gz", label=True)
    assert got_label.dtype == np.uint8
    np.testing.assert_array_equal(got_label, label)


def test_header_has_consistent_forms_typed_data_and_no_free_text(tmp_path, affine):
    save_nifti(tmp_path / "i.nii.gz", np.ones((8, 8, 2)), affine)
    save_nifti(tmp_path / "l.nii.gz", np.ones((8, 8, 2)), affine, label=True)
    img, lab = nib.load(tmp_path / "i.nii.gz"), nib.load(tmp_path / "l.nii.gz")
    for loaded in (img, lab):
        hdr = loaded.header
        assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1
        np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-4)
        for field in ("descrip", "aux_file", "intent_name", "db_name"):
            assert set(bytes(hdr[field])) <= {0}  # every byte zero, nothing left over
        assert len(hdr.extensions) == 0
    assert img.get_data_dtype() == np.float32
    assert lab.get_data_dtype() == np.uint8


@pytest.mark.parametrize("keep", [0.5, 0.02])  # cut in the voxels, cut in the header
def test_truncated_gzip_is_refused(tmp_path, affine, keep):
    path = tmp_path / "t.nii.gz"
    save_nifti(path, np.random.default_rng(1).normal(size=(32, 32, 4)), affine)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _raises(path, "truncated")


def test_truncated_uncompressed_is_refused_before_reading(tmp_path, affine):
    path = tmp_path / "t.nii"
    save_nifti(path, np.ones((32, 32, 4)), affine)
    path.write_bytes(path.read_bytes()[:-100])
    _raises(path, "truncated")


def test_gz_name_without_gzip_is_refused(tmp_path):
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(b"this is not gzip at all" * 20)
    _raises(path, "not a gzip")


def test_garbage_nii_is_refused(tmp_path):
    path = tmp_path / "fake.nii"
    path.write_bytes(b"\x00garbage" * 100)
    _raises(path, "not a readable NIfTI")


def test_nan_and_inf_voxels_are_refused(tmp_path, affine):
    for bad in (np.nan, np.inf):
        image = np.ones((8, 8, 2), dtype=np.float32)
        image[3, 3, 1] = bad
        path = tmp_path / f"bad{bad}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), path)
        _raises(path, "NaN or inf")


def test_label_value_7_is_refused(tmp_path, affine):
    label = np.zeros((8, 8, 2), dtype=np.uint8)
    label[2, 2, 0] = 7
    path = tmp_path / "l.nii.gz"
    nib.save(nib.Nifti1Image(label, affine), path)
    _raises(path, "unexpected label values [7]", label=True)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_huge_dims_in_a_tiny_header_are_refused_before_allocating(tmp_path, suffix):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((30000, 30000, 30000))
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + b"\x00" * 64
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    assert path.stat().st_size < 1000
    err = _raises(path, "above the cap")
    assert str(MAX_VOXELS[3]) in err.problem


def test_non_orthogonal_affine_is_refused(tmp_path, affine):
    sheared = affine.copy()
    sheared[:3, 1] += 0.2 * sheared[:3, 0]
    path = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.float32), sheared), path)
    _raises(path, "non-orthogonal")


def test_singular_affine_is_refused(tmp_path, affine):
    flat = affine.copy()
    flat[:3, 2] = flat[:3, 0]  # two axes along the same direction: a grid of zero volume
    path = tmp_path / "s.nii.gz"
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(flat, code=1)  # nibabel cannot derive a qform from it; write the sform alone
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.float32), None, header=hdr), path)
    assert int(nib.load(path).header["sform_code"]) == 1
    _raises(path, "degenerate")


def test_wrong_ndim_is_refused_but_a_trailing_singleton_is_not(tmp_path, affine):
    path = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2, 3), np.float32), affine), path)
    _raises(path, "expected a 3D volume")
    single = tmp_path / "4d1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2, 1), np.float32), affine), single)
    assert load_nifti(single)[0].shape == (8, 8, 2)
    assert load_nifti(path, ndim=4)[0].shape == (8, 8, 2, 3)


def test_missing_file_is_named(tmp_path):
    _raises(tmp_path / "nope.nii.gz", "file not found")
