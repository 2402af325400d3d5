"""The phantom cohort: deterministic, anatomically valid, with group, vendor and patient effects.

Everything is measured from what the phantom writes (labels, images, affines), not from the
parameters it was drawn with, except the ejection-fraction solver, which is checked against its
own integral.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cmri_release.core.labels import LV, MYO, RV
from cmri_release.phantom import GROUPS, make_phantom
from cmri_release.phantom.anatomy import sample_anatomy
from cmri_release.phantom.texture import SmoothField
from cmri_release.phantom.vendors import resolve_vendor


@pytest.fixture(scope="module")
def mixed():
    """30 patients: every group with every default vendor twice."""
    return make_phantom(30, seed=7)


@pytest.fixture(scope="module")
def one_vendor():
    """10 patients of one vendor, so that identity cannot come from the scanner."""
    return make_phantom(10, seed=9, vendors=["Siemens"])


def _ml(subject, phase, value):
    return float((subject.frames[phase].label == value).sum() * np.prod(subject.spacing) / 1000.0)


# --- determinism and seeds ------------------------------------------------------------------------
def test_same_seed_gives_identical_subjects():
    a, b = make_phantom(2, seed=5), make_phantom(2, seed=5)
    assert a.ids == b.ids
    for sa, sb in zip(a, b):
        assert np.array_equal(sa.affine, sb.affine)
        assert (sa.vendor, sa.centre, sa.group, sa.height, sa.weight, sa.n_frames) == \
               (sb.vendor, sb.centre, sb.group, sb.height, sb.weight, sb.n_frames)
        for phase in ("ED", "ES"):
            assert sa.frames[phase].index == sb.frames[phase].index
            assert np.array_equal(sa.frames[phase].image, sb.frames[phase].image)
            assert np.array_equal(sa.frames[phase].label, sb.frames[phase].label)
    # Patient i does not depend on how many patients were asked for.
    first = make_phantom(1, seed=5)
    assert np.array_equal(first.subjects[0].frames["ED"].image, a.subjects[0].frames["ED"].image)


def test_different_seeds_give_different_patients_and_ids():
    a, b = make_phantom(2, seed=5), make_phantom(2, seed=6)
    assert not set(a.ids) & set(b.ids)
    for sa, sb in zip(a, b):
        assert sa.group == sb.group  # same slot in the balanced mix, yet a different patient
        assert (sa.height, sa.weight) != (sb.height, sb.weight)
        assert abs(_ml(sa, "ED", LV) - _ml(sb, "ED", LV)) > 1.0 or sa.shape != sb.shape


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_subjects"):
        make_phantom(0, seed=1)
    with pytest.raises(ValueError, match="seed"):
        make_phantom(1, seed=-1)
    with pytest.raises(ValueError, match="unknown vendor"):
        make_phantom(1, seed=1, vendors=["Hitachi"])
    with pytest.raises(ValueError, match="unknown groups"):
        make_phantom(1, seed=1, groups=["XYZ"])
    assert resolve_vendor("b").name == "Philips" and resolve_vendor("ge").name == "GE"


# --- labels and geometry -------------------------------------------------------------------------
def _touching(mask, other):
    """Pixels of `mask` with a 4-neighbour in `other`."""
    grown = ndimage.binary_dilation(other, structure=ndimage.generate_binary_structure(2, 1))
    return mask & grown


def test_labels_are_nested(mixed):
    for s in mixed:
        for phase in ("ED", "ES"):
            lab = s.frames[phase].label
            assert set(np.unique(lab)) <= {0, RV, MYO, LV}
            open_slices = []
            for z in range(lab.shape[2]):
                sl = lab[:, :, z]
                lv, myo, rv = sl == LV, sl == MYO, sl == RV
                if lv.any():
                    # The cavity is ringed by myocardium; only a basal ring may open (to the outflow
                    # tract, or at ES to the atrium above the descended valve plane), and not mostly.
                    boundary = lv & ~ndimage.binary_erosion(lv, border_value=1)
                    leaks = _touching(lv, ~(lv | myo))
                    if leaks.any():
                        open_slices.append(z)
                        assert leaks.sum() < 0.6 * boundary.sum(), (s.id, phase, z)
                if rv.any() and myo.any():
                    # The RV wraps the septum (above the ES valve plane the RV outflow may show alone).
                    assert _touching(rv, myo).any(), (s.id, phase, z)
                    assert not _touching(rv, lv).any(), (s.id, phase, z)  # never the cavity itself
                    assert ndimage.label(rv)[1] <= 2, (s.id, phase, z)
            assert all(z <= 2 for z in open_slices), (s.id, phase, open_slices)


def test_stack_runs_base_to_apex(mixed):
    for s in mixed:
        lab = s.frames["ED"].label
        heart_area = ((lab == MYO) | (lab == LV)).sum(axis=(0, 1))
        rv_area = (lab == RV).sum(axis=(0, 1))
        assert heart_area.all(), s.id  # every slice cuts the LV
        assert heart_area[-1] < 0.5 * heart_area[len(heart_area) // 2], s.id  # the LV shrinks to the apex
        assert rv_area[0] > 0 and rv_area[-1] == 0, s.id  # the RV is gone at the apex


def test_geometry_like_a_scanner(mixed):
    offsets = []
    for s in mixed:
        dx, dy, dz = s.spacing
        nx, ny, nz = s.shape
        assert 1.2 <= dx <= 1.8 and dx == pytest.approx(dy)
        assert 6.0 <= dz <= 10.0 + 1e-9 and 8 <= nz <= 12
        assert 160 <= min(nx, ny) and max(nx, ny) <= 256
        directions = s.affine[:3, :3] / np.array([dx, dy, dz])
        assert np.allclose(directions.T @ directions, np.eye(3), atol=1e-9)
        assert 25 <= s.n_frames <= 30 and s.frames["ED"].index == 1 and 9 <= s.frames["ES"].index <= 13
        assert s.height and s.weight and s.centre.startswith("Centre")
        xs, ys, _ = np.nonzero(s.frames["ED"].label)
        offsets.append([(xs.mean() - (nx - 1) / 2) * dx, (ys.mean() - (ny - 1) / 2) * dy])
        image = s.frames["ED"].image
        assert image.dtype == np.float32 and np.isfinite(image).all() and image.min() >= 0
    offsets = np.array(offsets)
    # Not centred by construction: the heart sits off-centre, by different amounts per patient.
    assert np.median(np.hypot(*offsets.T)) > 10.0
    assert offsets.std(axis=0).min() > 8.0
    assert {s.group for s in mixed} == set(GROUPS)


# --- disease groups ----------------------------------------------------------------------------------
def _wall_mm(subject):
    """Mean LV wall thickness at ED from areas: r_epi - r_endo over slices with a cavity."""
    lab = subject.frames["ED"].label
    px = subject.spacing[0] * subject.spacing[1]
    lv = (lab == LV).sum(axis=(0, 1)) * px
    myo = (lab == MYO).sum(axis=(0, 1)) * px
    keep = lv > 0
    return float(np.mean(np.sqrt((lv[keep] + myo[keep]) / np.pi) - np.sqrt(lv[keep] / np.pi)))


def test_groups_change_the_anatomy_as_the_disease_does(mixed):
    stats = {g: [] for g in GROUPS}
    for s in mixed:
        edv, esv = _ml(s, "ED", LV), _ml(s, "ES", LV)
        rv_edv, rv_esv = _ml(s, "ED", RV), _ml(s, "ES", RV)
        stats[s.group].append(dict(edv=edv, ef=1 - esv / edv, rv_edv=rv_edv, rv_ef=1 - rv_esv / rv_edv,
                                   wall=_wall_mm(s)))
    mean = {g: {k: np.mean([r[k] for r in rows]) for k in rows[0]} for g, rows in stats.items()}
    assert mean["DCM"]["edv"] > 1.4 * mean["NOR"]["edv"]
    assert mean["MINF"]["edv"] > mean["NOR"]["edv"]
    assert mean["HCM"]["wall"] > 1.4 * mean["NOR"]["wall"]
    assert mean["DCM"]["wall"] < mean["NOR"]["wall"]
    assert mean["NOR"]["ef"] > 0.5 and mean["HCM"]["ef"] > 0.55
    assert mean["DCM"]["ef"] < 0.4 and mean["MINF"]["ef"] < 0.4
    assert mean["ARV"]["rv_edv"] > 1.4 * mean["NOR"]["rv_edv"]
    assert mean["ARV"]["rv_ef"] < mean["NOR"]["rv_ef"] - 0.1


def test_contraction_is_solved_to_the_target_ejection_fraction():
    rng = np.random.default_rng(0)
    for group in GROUPS:
        heart = sample_anatomy(rng, group).heart
        ef = 1 - heart.lv_cavity_volume("ES") / heart.lv_cavity_volume("ED")
        rv_ef = 1 - heart.rv_cavity_volume("ES") / heart.rv_cavity_volume("ED")
        assert ef == pytest.approx(heart.target_ef, abs=0.005)
        assert rv_ef == pytest.approx(heart.target_rv_ef, abs=0.005)


# --- vendors ----------------------------------------------------------------------------------------
def _vendor_features(subject, scale_free: bool):
    """Blood level (robust to papillary muscles), myocardium/blood contrast, noise floor, sharpness."""
    frame = subject.frames["ED"]
    img, lab = frame.image, frame.label
    inner_myo = ndimage.binary_erosion(lab == MYO, structure=np.ones((3, 3, 1)))
    blood = np.percentile(img[lab == LV], 75)
    stats = [np.median(img[inner_myo]) / blood, np.percentile(img, 2) / blood,
             np.mean(np.abs(np.diff(img, axis=0))) / blood]
    return stats if scale_free else [np.log(blood), *stats]


@pytest.mark.parametrize("scale_free", [False, True])
def test_vendor_styles_are_separable(mixed, scale_free):
    """Vendors differ in units, and also after dividing the units out (contrast, noise, blur)."""
    subjects = list(mixed)
    x = np.array([_vendor_features(s, scale_free) for s in subjects])
    y = np.array([s.vendor for s in subjects])
    train = np.arange(len(subjects)) % 2 == 0  # half of each vendor's patients train, half test
    model = make_pipeline(StandardScaler(), LogisticRegression(C=10.0, max_iter=5000)).fit(x[train], y[train])
    accuracy = model.score(x[~train], y[~train])
    assert accuracy > 0.9, accuracy


# --- patient identity ----------------------------------------------------------------------------
def _slice_embeddings(subject, phase, window_mm=160.0, size=32):
    """Crops around the ED label centroid, z-scored. 160 mm is the preprocessing's default crop
    (`PreprocessConfig.fov_mm`), i.e. what generators and auditors see; in mm, so spacing does not matter."""
    xs, ys, _ = np.nonzero(subject.frames["ED"].label)
    dx, dy, _ = subject.spacing
    offs = (np.arange(size) - (size - 1) / 2.0) * window_mm / size
    gx, gy = np.meshgrid(xs.mean() + offs / dx, ys.mean() + offs / dy, indexing="ij")
    image = subject.frames[phase].image
    out = []
    for z in range(image.shape[2]):
        crop = ndimage.map_coordinates(image[:, :, z], [gx, gy], order=1, mode="nearest")
        out.append(((crop - crop.mean()) / (crop.std() + 1e-6)).ravel())
    return np.array(out)


def test_a_patient_is_recognisable_across_slices_and_frames(one_vendor):
    ed, es, who_ed, who_es = [], [], [], []
    for i, s in enumerate(one_vendor):
        e, f = _slice_embeddings(s, "ED"), _slice_embeddings(s, "ES")
        ed.append(e), es.append(f)
        who_ed += [i] * len(e)
        who_es += [i] * len(f)
    ed, es, who_ed, who_es = np.vstack(ed), np.vstack(es), np.array(who_ed), np.array(who_es)
    pca = PCA(n_components=16, random_state=0).fit(np.vstack([ed, es]))
    a, b = pca.transform(ed), pca.transform(es)

    dist = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)  # leave one slice out
    within = (who_ed[dist.argmin(axis=1)] == who_ed).mean()
    cross = (who_es[((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).argmin(axis=1)] == who_ed).mean()
    chance = 1.0 / len(one_vendor)
    assert within > 0.5 and within > 4 * chance, within
    assert cross > 0.5 and cross > 4 * chance, cross


def test_static_texture_is_one_field_in_3d():
    rng = np.random.default_rng(1)
    field = SmoothField(rng, (-100, 100), (-80, 80), (0, 90), step=6.0)
    u, v = np.linspace(-90, 90, 64), np.linspace(-70, 70, 48)
    stack = field.on_slices(u, v, np.array([10.0, 12.0, 40.0, 10.0]))
    assert np.array_equal(stack[0], stack[3])  # the same plane read twice is the same
    near = np.corrcoef(stack[0].ravel(), stack[1].ravel())[0, 1]
    far = np.corrcoef(stack[0].ravel(), stack[2].ravel())[0, 1]
    assert near > 0.8 and abs(far) < 0.5
    other = SmoothField(np.random.default_rng(2), (-100, 100), (-80, 80), (0, 90), step=6.0)
    assert abs(np.corrcoef(stack[0].ravel(), other.on_slices(u, v, np.array([10.0]))[0].ravel())[0, 1]) < 0.5


# --- the command -----------------------------------------------------------------------------------
def test_phantom_command_writes_a_cohort_that_reads_back(tmp_path):
    from click.testing import CliRunner

    from cmri_release.cli import main
    from cmri_release.io import read_cohort

    out = tmp_path / "cohort"
    result = CliRunner().invoke(main, ["phantom", str(out), "--subjects", "2", "--seed", "3", "--vendors", "C,siemens",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    back = read_cohort(out)
    made = make_phantom(2, seed=3, vendors=["GE", "Siemens"])
    assert back.ids == made.ids and [s.vendor for s in back] == ["GE", "Siemens"]
    for a, b in zip(back, made):
        assert (a.group, a.centre, a.n_frames) == (b.group, b.centre, b.n_frames)
        assert np.allclose(a.affine, b.affine, atol=1e-4)
        for phase in ("ED", "ES"):
            assert a.frames[phase].index == b.frames[phase].index
            assert np.array_equal(a.frames[phase].label, b.frames[phase].label)
            assert np.array_equal(a.frames[phase].image, b.frames[phase].image)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_phantom_command_refuses_bad_output_and_vendors(tmp_path):
    from click.testing import CliRunner

    from cmri_release.cli import main

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["phantom", str(taken), "--subjects", "1", "--quiet"])
    assert result.exit_code == 2
    assert "not an empty folder" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    result = CliRunner().invoke(main, ["phantom", str(tmp_path / "new"), "--vendors", "Hitachi", "--quiet"])
    assert result.exit_code == 2 and "unknown vendor" in result.output
    assert not (tmp_path / "new").exists()


def test_worker_processes_render_the_same_patients():
    one = make_phantom(8, seed=5)
    two = make_phantom(8, seed=5, workers=2)
    assert [s.id for s in one] == [s.id for s in two]
    for a, b in zip(one, two):
        assert (a.vendor, a.group) == (b.vendor, b.group)
        for phase in a.frames:
            assert np.array_equal(a.frames[phase].image, b.frames[phase].image)
            assert np.array_equal(a.frames[phase].label, b.frames[phase].label)
