import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from ptyopt.data.dataset import Dataset4D, GroundTruth
from ptyopt.data.preprocess import Preprocessor, select_scan_region
from ptyopt.data.steps import STEPS, ClipNegative, CropDetector, FlipTranspose, Normalize, Pad, Resample, Step
from ptyopt.data.transforms import resampling_matrix, to_3d
from ptyopt.errors import ConfigError, DataError

DK = 0.05


def _blob_patterns(n=6, k=32, seed=0):
    """Smooth patterns (a disk plus a power-law tail) that vanish at the detector edge."""
    rng = np.random.default_rng(seed)
    y = np.arange(k) - k // 2
    r = np.sqrt(y[:, None] ** 2 + y[None, :] ** 2)
    base = np.where(r < 6, 100.0, 50.0 * np.maximum(r, 1) ** -2.0) * (r < k // 2 - 2)
    return (base[None] * rng.uniform(0.8, 1.2, size=(n, 1, 1))).astype(np.float32)


def _dataset(meas, **kw):
    n = meas.shape[0]
    return Dataset4D.from_raster(meas, (2, n // 2), 0.5, energy_kv=300.0, conv_angle_mrad=20.0, dk_inv_ang=DK, **kw)


def _steps(*items):
    return TypeAdapter(list[Step]).validate_python(list(items))


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_resample_keeps_counts_dc_and_pixel_size(scale):
    ds = _dataset(_blob_patterns())
    pre = Preprocessor([Resample(scale_factor=scale)], ds)
    out = pre.precompute(ds)
    k_new = round(32 * scale)
    assert out.detector_shape == (k_new, k_new)
    assert pre.geometry.shape_px == (k_new, k_new) and pre.geometry.dk_inv_ang == pytest.approx(DK / scale)
    assert out.pixel_size_ang == pytest.approx(ds.pixel_size_ang)  # dx kept ...
    assert pre.geometry.window_ang[0] == pytest.approx(ds.pixel_size_ang[0] * k_new)  # ... window scaled by s
    np.testing.assert_allclose(out.meas.sum(axis=(1, 2)), ds.meas.sum(axis=(1, 2)), rtol=1e-5)
    delta = torch.zeros(1, 32, 32, dtype=torch.float64)
    delta[0, 16, 16] = 1.0
    moved = pre.apply_all(delta)
    assert torch.argmax(moved[0]).item() == (k_new // 2) * k_new + k_new // 2


def test_resample_half_is_centred_triangle_binning():
    m = resampling_matrix(8, 0.5).numpy()
    assert m.shape == (4, 8)
    np.testing.assert_allclose(m[2], [0, 0, 0, 0.5, 1, 0.5, 0, 0])  # new centre pixel on old DC (index 4)
    np.testing.assert_allclose(m.sum(axis=0)[:-1], 1.0)  # counts kept; the last pixel straddles the edge
    assert m.sum(axis=0)[-1] == 0.5
    with pytest.raises(ConfigError, match="whole number of pixels"):
        resampling_matrix(30, 0.35)


def test_on_the_fly_equals_precompute():
    meas = _blob_patterns() - 0.5
    ds = _dataset(meas.astype(np.float32))
    config = [
        {"kind": "flip_transpose", "flip_y": True, "transpose": True},
        {"kind": "clip_negative"},
        {"kind": "normalize", "method": "max_of_mean"},
        {"kind": "pad", "target_px": [48, 48], "background": "power_law"},
        {"kind": "resample", "scale_factor": 0.5},
    ]
    pre = Preprocessor(_steps(*config), ds)
    fly = Preprocessor(_steps(*[c | {"mode": "on_the_fly"} for c in config]), ds)
    mixed = Preprocessor(_steps(*config[:3], *[c | {"mode": "on_the_fly"} for c in config[3:]]), ds)
    full = pre.precompute(ds).meas
    batch = torch.from_numpy(ds.meas[:3])
    torch.testing.assert_close(fly.on_the_fly(batch), torch.from_numpy(full[:3]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(mixed.on_the_fly(torch.from_numpy(mixed.precompute(ds).meas[:3])),
                               torch.from_numpy(full[:3]), rtol=1e-5, atol=1e-7)
    assert pre.geometry == fly.geometry == mixed.geometry
    assert pre.geometry.shape_px == (24, 24) and pre.geometry.pixel_size_ang[0] == pytest.approx(1 / (48 * DK))


def test_precompute_after_on_the_fly_is_rejected():
    ds = _dataset(_blob_patterns())
    with pytest.raises(ConfigError, match="precomputed steps must come first"):
        Preprocessor([ClipNegative(mode="on_the_fly"), Resample(scale_factor=0.5)], ds)


def test_crop_detector_geometry_and_centring():
    ds = _dataset(_blob_patterns())
    pre = Preprocessor([CropDetector(y_px=(8, 24), x_px=(8, 24))], ds)
    out = pre.precompute(ds)
    assert out.detector_shape == (16, 16) and out.dk_inv_ang == DK
    assert out.dx_ang == pytest.approx(2 * ds.dx_ang)  # fewer pixels at the same dk: coarser real-space pixel
    np.testing.assert_array_equal(out.meas, ds.meas[:, 8:24, 8:24])
    with pytest.raises(DataError, match="use 8:24"):
        Preprocessor([CropDetector(y_px=(0, 16), x_px=(8, 24))], ds)


def test_pad_constant_and_power_law_fit():
    k = 64
    y = np.arange(k) - k // 2
    r = np.maximum(np.sqrt(y[:, None] ** 2 + y[None, :] ** 2), 1)
    meas = np.repeat((3.0 * r**-1.5)[None], 4, axis=0).astype(np.float32)
    meas[:, 28:36, 28:36] = 10.0  # bright centre is excluded from the fit by the percentile threshold
    ds = _dataset(meas)
    pre = Preprocessor([Pad(target_px=(96, 96), background="power_law")], ds)
    out = pre.precompute(ds)
    assert out.dx_ang == pytest.approx(1 / (96 * DK))
    np.testing.assert_array_equal(out.meas[:, 16:80, 16:80], meas)  # measured pixels untouched, DC at 48
    yy = np.arange(96) - 48
    rr = np.sqrt(yy[:, None] ** 2 + yy[None, :] ** 2)
    np.testing.assert_allclose(out.meas[0, 0, 48], 3.0 * rr[0, 48] ** -1.5, rtol=1e-3)
    const = Preprocessor([Pad(target_px=(80, 72), value=0.25)], ds).precompute(ds)
    assert const.detector_shape == (80, 72) and const.meas[0, 0, 0] == 0.25
    with pytest.raises(ConfigError, match="smaller than the detector"):
        Preprocessor([Pad(target_px=(32, 32))], ds)


def test_flip_keeps_dc_and_normalize_clip():
    meas = _blob_patterns()
    meas[:, 16, 20] = 500.0  # an off-centre marker at kx = +4 px
    ds = _dataset(meas)
    out = Preprocessor([FlipTranspose(flip_x=True)], ds).precompute(ds).meas
    assert out[0, 16, 12] == 500.0 and out[0, 16, 16] == meas[0, 16, 16]  # kx -> -kx about DC
    normed = Preprocessor([Normalize()], ds).precompute(ds)
    assert normed.meas.mean(axis=0).sum() == pytest.approx(1.0, rel=1e-5) and not normed.counts
    neg = _dataset(meas - 1.0)
    assert Preprocessor([ClipNegative()], neg).precompute(neg).meas.min() == 0.0


def test_select_scan_region_and_to_3d():
    meas4 = np.arange(4 * 5 * 3 * 3, dtype=np.float32).reshape(4, 5, 3, 3)
    meas, scan_shape = to_3d(np.transpose(meas4, (2, 3, 0, 1)), permute=(2, 3, 0, 1))
    assert scan_shape == (4, 5)
    np.testing.assert_array_equal(meas[1 * 5 + 2], meas4[1, 2])
    truth = GroundTruth(np.zeros((1, 8, 8)), 0.1, 2.0, positions_ang=np.arange(40.0).reshape(20, 2))
    ds = Dataset4D.from_raster(meas, scan_shape, 0.5, energy_kv=300.0, conv_angle_mrad=20.0, dk_inv_ang=DK,
                               truth=truth)
    sub = select_scan_region(ds, (1, 3), (1, 4))
    assert sub.scan_shape == (2, 3) and sub.n_patterns == 6
    np.testing.assert_array_equal(sub.meas[0], meas4[1, 1])
    np.testing.assert_allclose(sub.positions_ang[0], [0.5, 0.5])
    np.testing.assert_allclose(sub.truth.positions_ang[0], truth.positions_ang[6])
    with pytest.raises(DataError, match="do not fit"):
        select_scan_region(ds, (0, 9), None)
    with pytest.raises(ConfigError, match="permute"):
        to_3d(meas4, permute=(0, 1, 2))


@pytest.mark.parametrize("name", STEPS.names())
def test_every_registered_step_parses_by_kind_and_gives_the_same_numbers_on_the_fly(name):
    """Each step of the registry, from its config (kind + its class's example values): precomputed on the whole
    dataset or applied per batch, the same patterns; the counts flag follows ``keeps_counts``."""
    cls = STEPS.get(name)
    ds = _dataset(_blob_patterns(), counts=True)
    pre = Preprocessor(_steps({"kind": name, **cls.example}), ds)
    fly = Preprocessor(_steps({"kind": name, "mode": "on_the_fly", **cls.example}), ds)
    assert type(pre.steps[0].config) is cls
    out = pre.precompute(ds)
    batch = fly.on_the_fly(torch.from_numpy(np.asarray(ds.meas, dtype=np.float32)), np.arange(ds.n_patterns))
    np.testing.assert_allclose(batch.numpy(), out.meas, rtol=1e-6, atol=1e-6)
    assert out.counts == cls.keeps_counts and fly.geometry == pre.geometry
