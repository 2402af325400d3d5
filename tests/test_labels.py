import numpy as np
import pytest

from cmri_release.core.errors import InputError
from cmri_release.core.labels import LV, MYO, RV, check_labels, mnms_to_acdc, one_hot


def test_mnms_map_swaps_ventricles_and_is_an_involution():
    mnms = np.array([0, 1, 2, 3], dtype=np.uint8)  # M&Ms: 1 LV, 2 MYO, 3 RV
    acdc = mnms_to_acdc(mnms, "x")
    assert acdc.tolist() == [0, LV, MYO, RV]
    assert mnms_to_acdc(acdc, "x").tolist() == mnms.tolist()


@pytest.mark.parametrize("bad", [np.array([0, 7]), np.array([0.0, np.nan]), np.array([0.5, 1.0]), np.array([-1, 0])])
def test_values_outside_the_map_are_errors_not_casts(bad):
    with pytest.raises(InputError, match="lab.nii.gz"):
        check_labels(bad, "lab.nii.gz")


def test_one_hot():
    lab = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    oh = one_hot(lab)
    assert oh.shape == (4, 2, 2) and (oh.argmax(0) == lab).all() and oh.sum(0).max() == 1
