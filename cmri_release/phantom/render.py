"""Rasterise anatomy + texture + vendor into the ED and ES volumes of one phantom subject.

Each slice is painted back to front: the body (air, subcutaneous fat, muscle, lungs and their
vessels, ribs, posterior mediastinum, diaphragm, liver, stomach, spine, aorta, oesophagus) is the
same in both phases; the heart (pericardial fat, left atrium in basal slices, RV wall and cavity,
LV myocardium and cavity, papillary muscles, trabeculae) is painted per phase in a box around the
LV axis. Labels follow ACDC: papillary muscles and trabeculae are cavity; the atrium, the outflow
tract and, at ES, a basal ring mostly above the descended valve plane are not labelled.
Angular profiles are evaluated once per slice on fine angle bins and looked up per pixel, which
keeps a 256 x 256 x 12 x 2 subject at about 0.2 s of CPU.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.cohort import Frame, Subject
from ..core.labels import LV, MYO, RV
from .anatomy import TWO_PI, Anatomy, Tissue, fourier, sample_anatomy, wrap
from .texture import TEXTURE_AMPLITUDE, PatientTexture, sample_texture
from .vendors import VendorStyle, acquire, banding_factor, bias_field, sample_protocol

N_BINS = 2048
_BIN_THETA = (np.arange(N_BINS) + 0.5) * TWO_PI / N_BINS


_THORAX_CONTENTS = (Tissue.LUNG, Tissue.MEDIASTINUM, Tissue.VESSEL, Tissue.LIVER, Tissue.STOMACH)


def _member_table(values) -> np.ndarray:
    """Lookup table over uint8 tissue codes: table[tissue] is np.isin(tissue, values), without isin's overhead."""
    table = np.zeros(256, dtype=bool)
    table[list(values)] = True
    return table


_IN_THORAX = _member_table(_THORAX_CONTENTS)


def _bins(theta: np.ndarray) -> np.ndarray:
    """Angle bin of each theta. For |theta| < 2 pi (arctan2's range) the modulo is theta, or theta + 2 pi
    where negative, which is what np.mod computes there, only cheaper; the bin index is at most N_BINS."""
    theta = np.asarray(theta, dtype=float)
    if theta.size and np.abs(theta).max() < TWO_PI:
        turned = theta + TWO_PI
        np.copyto(turned, theta, where=theta >= 0.0)
    else:
        turned = np.mod(theta, TWO_PI)
    turned *= N_BINS / TWO_PI
    out = turned.astype(np.intp)
    out[out >= N_BINS] -= N_BINS
    return out


def _paint_disk(tissue_slice, u, v, centre, radius, value, *, where=None):
    """Paint a disk (mm) into a (x, y) slice whose pixel centres are u (x) and v (y)."""
    du, dv = u[1] - u[0], v[1] - v[0]
    i0 = max(int(np.floor((centre[0] - radius - u[0]) / du)), 0)
    i1 = min(int(np.ceil((centre[0] + radius - u[0]) / du)) + 1, len(u))
    j0 = max(int(np.floor((centre[1] - radius - v[0]) / dv)), 0)
    j1 = min(int(np.ceil((centre[1] + radius - v[0]) / dv)) + 1, len(v))
    if i0 >= i1 or j0 >= j1:
        return
    inside = (u[i0:i1, None] - centre[0]) ** 2 + (v[None, j0:j1] - centre[1]) ** 2 < radius**2
    patch = tissue_slice[i0:i1, j0:j1]
    if where is not None:
        inside &= _member_table(where)[patch]
    patch[inside] = value


def _drop_specks(mask: np.ndarray, min_pixels: int = 12) -> np.ndarray:
    """Remove connected pieces too small for an annotator to draw (crescent tips broken by pixelation)."""
    pieces, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(pieces.ravel())
    keep = sizes >= max(min_pixels, 0.05 * sizes[1:].max())
    keep[0] = False
    return keep[pieces]


def paint_body(anatomy: Anatomy, texture: PatientTexture, u, v, zs) -> np.ndarray:
    """Tissue classes of the static body, (n_slices, x, y) uint8."""
    body, heart = anatomy.body, anatomy.heart
    outline, fat_inner, muscle_inner = body.layers(_BIN_THETA)
    out = np.empty((len(zs), len(u), len(v)), dtype=np.uint8)
    for k, z in enumerate(zs):
        c = body.centre(z)
        du = u[:, None] - c[0]
        dv = v[None, :] - c[1]
        r = np.hypot(du, dv)
        b = _bins(np.arctan2(dv, du))
        sl = out[k]
        sl[...] = Tissue.AIR
        sl[r < outline[b]] = Tissue.FAT
        sl[r < fat_inner[b]] = Tissue.MUSCLE
        thorax = r < muscle_inner[b]
        sl[thorax] = Tissue.LUNG

        # Ribs sit on the inner face of the chest wall (not over the spine).
        for angle0, drift, size in texture.ribs:
            angle = angle0 + drift * z
            if abs(((angle - np.pi / 2 + np.pi) % TWO_PI) - np.pi) < 0.6:
                continue
            radius = muscle_inner[_bins(np.array([angle]))[0]] + 0.6 * size
            centre = c + radius * np.array([np.cos(angle), np.sin(angle)])
            _paint_disk(sl, u, v, centre, size / 2.0, Tissue.BONE)
            _paint_disk(sl, u, v, centre, size / 2.0 - 1.5, Tissue.MARROW)

        # Lung vessels: bright dots, only inside the lungs.
        centres, radii = texture.vessels.at(z)
        for centre, radius in zip(centres, radii):
            _paint_disk(sl, u, v, c + centre, radius, Tissue.VESSEL, where=(Tissue.LUNG,))

        # Spine at the back of the thorax.
        spine = c + np.array([body.spine_u, muscle_inner[_bins(np.array([np.pi / 2]))[0]] + 0.1 * body.vertebra_radius])
        # Posterior mediastinum: a band of fat and small structures from the heart back to the spine.
        axis = heart.axis(z)
        mid = 0.5 * (axis + spine) + np.array([-12.0, 0.0])
        along = spine - axis
        half_len = np.linalg.norm(along) / 2.0 + 8.0
        along = along / np.linalg.norm(along)
        pu, pv = u[:, None] - mid[0], v[None, :] - mid[1]
        s_along = (pu * along[0] + pv * along[1]) / half_len
        s_across = (-pu * along[1] + pv * along[0]) / body.mediastinum_mm
        sl[thorax & (s_along**2 + s_across**2 < 1.0)] = Tissue.MEDIASTINUM

        # Diaphragm dome: liver below it on the patient's right (image left), stomach on the left.
        dome = body.liver_top - body.liver_rise * z + body.liver_curvature * (du - body.liver_u) ** 2
        below = thorax & (dv > dome)
        sl[below & (dv < dome + 4.0)] = Tissue.MUSCLE
        deep = below & (dv >= dome + 4.0)
        sl[deep] = Tissue.LIVER
        # The stomach: a fluid-filled sac under the left dome with a gas cap on top.
        top = body.liver_top - body.liver_rise * z + body.liver_curvature * (body.stomach_u - body.liver_u) ** 2
        stomach = deep & (((du - body.stomach_u) / 45.0) ** 2 + ((dv - top - 38.0) / 32.0) ** 2 < 1.0)
        sl[stomach] = Tissue.STOMACH
        sl[stomach & (dv < top + 6.0 + texture.stomach_gas * 40.0)] = Tissue.AIR

        # Vertebra with its canal, the descending aorta beside it, the oesophagus in front.
        _paint_disk(sl, u, v, spine, body.vertebra_radius + 1.8, Tissue.BONE)
        _paint_disk(sl, u, v, spine, body.vertebra_radius, Tissue.MARROW)
        canal = spine + np.array([0.0, body.vertebra_radius + body.canal_radius + 2.5])
        _paint_disk(sl, u, v, canal, body.canal_radius + 1.5, Tissue.BONE)
        _paint_disk(sl, u, v, canal, body.canal_radius, Tissue.CSF)
        aorta = spine + body.aorta_offset
        _paint_disk(sl, u, v, aorta, body.aorta_radius + 1.2, Tissue.MUSCLE)
        _paint_disk(sl, u, v, aorta, body.aorta_radius, Tissue.VESSEL)
        oesophagus = spine + np.array([-0.3 * body.aorta_offset[0], -body.vertebra_radius - 9.0])
        _paint_disk(sl, u, v, oesophagus, 7.0, Tissue.MUSCLE)
        _paint_disk(sl, u, v, oesophagus, 2.0, Tissue.AIR)
    return out


def paint_heart(anatomy: Anatomy, texture: PatientTexture, u, v, zs, phase, tissue, label, relative):
    """Paint the heart of one phase into tissue / label / relative-signal stacks (in place)."""
    heart = anatomy.heart
    th = _BIN_THETA
    rel_th = th - heart.septal_angle
    trab_lv = fourier(rel_th, texture.trabeculae_lv)
    trab_rv = fourier(rel_th, texture.trabeculae_rv)
    trab_lv = np.clip(trab_lv / trab_lv.std() - 0.3, 0.0, 2.0) / 2.0
    trab_rv = np.clip(trab_rv / trab_rv.std() - 0.3, 0.0, 2.0) / 2.0
    du_px, dv_px = u[1] - u[0], v[1] - v[0]
    for k, z in enumerate(zs):
        zm = heart.material_z(z, phase)
        frac = min(zm / heart.length, 1.0)
        endo, epi = heart.lv_radii(th, z, phase)
        depth = heart.rv_depth_at(th, z, phase)
        has_rv = depth > 0.4
        outer = epi + np.where(has_rv, depth + heart.rv_wall_mm, 0.0)
        fat = outer + texture.pericardial_fat(rel_th, frac)
        reach = float(fat.max()) + 2.0
        if float(epi.max()) <= 0.0:
            continue
        axis = heart.axis(z)
        i0 = max(int((axis[0] - reach - u[0]) / du_px), 0)
        i1 = min(int((axis[0] + reach - u[0]) / du_px) + 2, len(u))
        j0 = max(int((axis[1] - reach - v[0]) / dv_px), 0)
        j1 = min(int((axis[1] + reach - v[0]) / dv_px) + 2, len(v))
        du = u[i0:i1, None] - axis[0]
        dv = v[None, j0:j1] - axis[1]
        r = np.hypot(du, dv)
        b = _bins(np.arctan2(dv, du))
        t_sl, l_sl, s_sl = tissue[k, i0:i1, j0:j1], label[k, i0:i1, j0:j1], relative[k, i0:i1, j0:j1]
        e, p, d, rv_here = endo[b], epi[b], depth[b], has_rv[b]

        # Pericardial fat fills the thorax around the heart but never eats into the chest wall.
        in_fat = (r < fat[b]) & _IN_THORAX[t_sl]
        t_sl[in_fat] = Tissue.FAT
        if z < heart.atrium_reach(phase):
            # The left atrium behind the base; unlabelled, as in ACDC.
            angle = heart.atrium_angle
            e_here = float(np.interp(np.mod(angle, TWO_PI), th, epi, period=TWO_PI))
            centre = (e_here + 0.5 * heart.atrium_radius) * np.array([np.cos(angle), np.sin(angle)])
            atrium = (du - centre[0]) ** 2 + (dv - centre[1]) ** 2 < heart.atrium_radius**2
            t_sl[atrium] = Tissue.MYOCARDIUM
            atrium &= (du - centre[0]) ** 2 + (dv - centre[1]) ** 2 < (heart.atrium_radius - 2.5) ** 2
            t_sl[atrium] = Tissue.BLOOD
            in_fat |= atrium
        t_sl[rv_here & (r >= p) & (r < outer[b])] = Tissue.MYOCARDIUM  # RV free wall (not labelled)
        # A crescent thinner than a pixel would rasterise into specks: there the walls meet.
        rv = _drop_specks(rv_here & (d > 1.2 * du_px) & (r >= p) & (r < p + d))
        myo = (r >= e) & (r < p)
        lv = r < e
        open_ring = heart.outflow_open(th, z, phase)[b] & myo
        gap = float(heart.valve_gap(z, phase))
        if gap > 0.0:
            # Above the descended valve plane: the atrium shows through the open mitral ring.
            through = np.abs(wrap(th - heart.mitral_angle())) < np.pi * gap
            open_ring |= through[b] & (myo | lv)
            lv &= ~open_ring
        myo &= ~open_ring
        t_sl[rv] = Tissue.BLOOD
        t_sl[myo] = Tissue.MYOCARDIUM
        t_sl[lv | open_ring] = Tissue.BLOOD
        l_sl[rv] = RV
        if heart.lv_labelled(z, phase):
            l_sl[myo] = MYO
            l_sl[lv] = LV

        # Dark detail inside the cavities that ACDC labels as cavity: trabeculae and papillary muscles.
        lv_trab = lv & (r > e - texture.trabecular_depth[0] * (0.4 + frac) * trab_lv[b])
        rv_trab = rv & (r > p + d - texture.trabecular_depth[1] * trab_rv[b])
        t_sl[lv_trab | rv_trab] = Tissue.MYOCARDIUM
        cavity_frac = zm / heart.cavity_length
        for pm in texture.papillary:
            if not pm.z_span[0] <= cavity_frac <= pm.z_span[1]:
                continue
            angle = heart.septal_angle + pm.angle
            e_here = float(np.interp(np.mod(angle, TWO_PI), th, endo, period=TWO_PI))
            radius = min(pm.radius, 0.45 * e_here)
            if radius < 1.0:
                continue
            centre = pm.fraction * e_here * np.array([np.cos(angle), np.sin(angle)])
            spot = lv & ((du - centre[0]) ** 2 + (dv - centre[1]) ** 2 < radius**2)
            t_sl[spot] = Tissue.MYOCARDIUM

        # Heart texture moves with the tissue: indexed by angle and ED depth, not by pixel.
        heart_px = in_fat | rv | myo | lv | open_ring
        myo_tex = texture.angular(texture.myo_texture, rel_th, frac)
        blood_tex = texture.angular(texture.blood_texture, rel_th, frac)
        muscle_px = heart_px & (t_sl == Tissue.MYOCARDIUM)
        blood_px = heart_px & (t_sl == Tissue.BLOOD)
        s_sl[muscle_px] = 1.0 + myo_tex[b][muscle_px]
        # Flowing blood is a little darker near the walls than in the middle of the cavity.
        edge = np.where(lv, np.clip(r / np.maximum(e, 1.0), 0.0, 1.0), 0.7)
        s_sl[blood_px] = (1.0 + blood_tex[b] - 0.06 * edge**2)[blood_px]


def render_subject(subject_id: str, seed: np.random.SeedSequence, group: str, style: VendorStyle) -> Subject:
    """One phantom subject: anatomy of `group`, scanned with `style`; deterministic for `seed`."""
    anat_rng, proto_rng, tex_rng, noise_rng = (np.random.default_rng(s) for s in seed.spawn(4))
    anatomy = sample_anatomy(anat_rng, group)
    protocol = sample_protocol(proto_rng, style, anatomy.heart)
    u, v = protocol.pixel_coordinates()
    zs = protocol.slice_positions
    texture = sample_texture(tex_rng, anatomy, (u[0], u[-1]), (v[0], v[-1]), (zs[0], zs[-1]))

    body = paint_body(anatomy, texture, u, v, zs)
    field = 0.6 * texture.coarse.on_slices(u, v, zs) + 0.8 * texture.fine.on_slices(u, v, zs)
    static_relative = 1.0 + TEXTURE_AMPLITUDE.astype(np.float32)[body] * field
    levels = (style.levels * texture.tissue_gain).astype(np.float32)

    signal = np.empty((2,) + body.shape, dtype=np.float32)  # (phase, z, x, y)
    labels = []
    for p, phase in enumerate(("ED", "ES")):
        tissue = body.copy()
        label = np.zeros_like(body)
        relative = static_relative.copy()
        paint_heart(anatomy, texture, u, v, zs, phase, tissue, label, relative)
        np.maximum(relative, 0.0, out=relative)
        np.multiply(levels[tissue], relative, out=signal[p])
        labels.append(label)

    centre = anatomy.body.centre(float(zs.mean()))
    heart_centre = anatomy.heart.axis(float(zs.mean()))
    gain = bias_field(protocol, u, v, centre, anatomy.body.half_depth, heart_centre)
    bands = banding_factor(protocol, u, v, heart_centre)
    if bands is not None:
        gain = gain * bands
    images = acquire(signal, protocol, style, noise_rng, gain)

    frames = {}
    for p, (phase, index) in enumerate((("ED", 1), ("ES", protocol.es_frame))):
        frames[phase] = Frame(phase=phase, index=index, image=np.ascontiguousarray(images[p].transpose(1, 2, 0)),
                              label=np.ascontiguousarray(labels[p].transpose(1, 2, 0)))
    return Subject(
        id=subject_id, frames=frames, affine=protocol.affine(), vendor=protocol.vendor, centre=protocol.centre,
        group=group, height=anatomy.body.height_cm, weight=anatomy.body.weight_kg, n_frames=protocol.n_frames,
        extra={"field_strength_t": protocol.field_t, "slice_thickness_mm": protocol.slice_thickness},
    )
