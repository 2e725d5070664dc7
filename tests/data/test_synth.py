"""Synthetic generators against their analytic statistics."""

from __future__ import annotations

import numpy as np
import pytest

from radardiff.data.dataset_file import DatasetFile
from radardiff.data.synth import (
    GENERATORS,
    SAR_CLASSES,
    SOURCE_CLASSES,
    InsarNoiseParams,
    SarParams,
    WrappedParams,
    build_params,
    insar_noise,
    insar_unwrapped,
    insar_wrapped,
    sar_scenes,
    synthesize,
)
from radardiff.data.synth.elastic import (
    Displacement,
    los_displacement,
    los_phase,
    los_unit_vector,
    mogi,
    okada85,
    okada85_local,
)
from radardiff.data.synth.fields import powerlaw_field, ramp, spectral_slope
from radardiff.data.synth.insar import correlated_phase_noise, phase_pdf, phase_std, wrap
from radardiff.data.synth.sar import gamma_speckle
from radardiff.errors import ConfigError, DataError

# ---- random fields ------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [5.0 / 3.0, 8.0 / 3.0, 3.5])
def test_powerlaw_field_spectral_slope(beta):
    f = powerlaw_field(100, 64, beta, np.random.default_rng(1), std=2.0)
    assert abs(spectral_slope(f) - beta) < 0.15
    np.testing.assert_allclose(f.std(axis=(1, 2)), 2.0, rtol=1e-6)
    np.testing.assert_allclose(f.mean(axis=(1, 2)), 0.0, atol=1e-6)


def test_periodic_field_has_exact_periodogram_slope():
    f = powerlaw_field(100, 32, 8.0 / 3.0, np.random.default_rng(2), pad=1)
    assert abs(spectral_slope(f, taper=False) - 8.0 / 3.0) < 0.05


@pytest.mark.parametrize("beta", [2.0, 8.0 / 3.0])
def test_insar_noise_turbulence_slope(beta):
    p = InsarNoiseParams(beta=beta, strat_k=0.0, ramp_rad=0.0, noise_std=0.0)
    x = insar_noise(100, 64, seed=3, params=p)
    assert x.shape == (100, 1, 64, 64) and x.dtype == np.float32
    assert abs(spectral_slope(x[:, 0]) - beta) < 0.15


def test_stratified_component_follows_topography_spectrum():
    p = InsarNoiseParams(turb_std=1e-12, ramp_rad=0, noise_std=0, strat_k=0.002, topo_std_m=300.0)
    x = insar_noise(100, 64, seed=5, params=p)[:, 0].astype(np.float64)
    assert abs(spectral_slope(x) - p.topo_beta) < 0.15
    # phi = K h, |K| uniform in [0, strat_k], std(h) = 300 m: std(phi) <= 0.6 rad, mean 0.3
    s = x.std(axis=(1, 2))
    assert s.max() <= 0.6 + 1e-6 and abs(s.mean() - 0.3) < 0.06


def test_turbulence_std_is_lognormal_around_turb_std():
    p = InsarNoiseParams(turb_std=1.5, turb_std_spread=0.3, strat_k=0, ramp_rad=0, noise_std=0)
    s = insar_noise(512, 16, seed=0, params=p).std(axis=(1, 2, 3))
    # log std ~ N(log 1.5, 0.3): mean and spread of the logs, 512 draws
    assert abs(np.log(s).mean() - np.log(1.5)) < 0.05
    assert abs(np.log(s).std() - 0.3) < 0.04


def test_ramp_is_planar_with_bounded_gradient():
    r = ramp(50, 16, np.random.default_rng(0), max_gradient=0.1)
    gx, gy = np.diff(r, axis=2), np.diff(r, axis=1)
    assert np.ptp(gx, axis=(1, 2)).max() < 1e-12 and np.ptp(gy, axis=(1, 2)).max() < 1e-12
    assert np.abs(gx).max() <= 0.1 and np.abs(r.mean(axis=(1, 2))).max() < 1e-12


def test_insar_noise_white_noise_component():
    p = InsarNoiseParams(turb_std=1e-9, strat_k=0, ramp_rad=0, noise_std=0.3)
    x = insar_noise(64, 32, seed=1, params=p)
    assert abs(x.std() - 0.3) < 0.01


# ---- elastic sources ----------------------------------------------------------------------------


def test_mogi_peak_uplift_and_radial_symmetry():
    dv, d = 1e6, 2000.0
    u = mogi(0.0, 0.0, d, dv)
    assert u.up == pytest.approx(3 * dv / (4 * np.pi * d**2), rel=1e-12)
    a, b = mogi(700.0, 300.0, d, dv), mogi(-300.0, 700.0, d, dv)
    assert a.up == pytest.approx(b.up, rel=1e-12)
    assert np.hypot(a.east, a.north) == pytest.approx(np.hypot(b.east, b.north), rel=1e-12)
    # horizontal / vertical = r / d
    assert np.hypot(a.east, a.north) / a.up == pytest.approx(np.hypot(700, 300) / d, rel=1e-12)


@pytest.mark.parametrize(("incidence", "heading"), [(35.0, -10.0), (42.0, -170.0)])
def test_mogi_los_peak_position_and_value(incidence, heading):
    """d_LOS(t) = C (t sin(th) + d cos(th)) / (t^2 + d^2)^1.5 along the look direction peaks at
    t* = d (-3 cos(th) + sqrt(9 cos^2(th) + 8 sin^2(th))) / (4 sin(th))."""
    d, dv, nu = 3000.0, 2e6, 0.25
    th = np.deg2rad(incidence)
    t_star = (
        d
        * (-3 * np.cos(th) + np.sqrt(9 * np.cos(th) ** 2 + 8 * np.sin(th) ** 2))
        / (4 * np.sin(th))
    )
    c = (1 - nu) * dv / np.pi
    peak = c * (t_star * np.sin(th) + d * np.cos(th)) / (t_star**2 + d**2) ** 1.5
    g = np.arange(-4000.0, 4000.0 + 1e-9, 5.0)
    e, n = g[None, :], g[:, None]
    dlos = los_displacement(mogi(e, n, d, dv, nu), incidence, heading)
    i, j = np.unravel_index(np.argmax(dlos), dlos.shape)
    se, sn, _ = los_unit_vector(incidence, heading)
    expect = t_star * np.array([se, sn]) / np.hypot(se, sn)  # towards the satellite
    assert np.hypot(e[0, j] - expect[0], n[i, 0] - expect[1]) < 5.0
    assert dlos.max() == pytest.approx(peak, rel=1e-4)
    # phase = -4 pi / lambda * d_LOS: the uplift peak is the phase minimum
    phi = los_phase(mogi(e, n, d, dv, nu), incidence, heading, 0.0555)
    assert phi.min() == pytest.approx(-4 * np.pi / 0.0555 * peak, rel=1e-4)


def test_los_unit_vector_geometry():
    se, sn, su = los_unit_vector(30.0, 0.0)  # flying north, looking east: satellite to the west
    np.testing.assert_allclose([se, sn, su], [-0.5, 0.0, np.sqrt(3) / 2], atol=1e-12)
    se, sn, su = los_unit_vector(40.0, -170.0)
    assert se > 0 and np.hypot(np.hypot(se, sn), su) == pytest.approx(1.0)
    u = Displacement(np.float64(0), np.float64(0), np.float64(0.01))
    assert los_displacement(u, 40.0, -170.0) == pytest.approx(0.01 * np.cos(np.deg2rad(40)))


# Okada (1985), Table 2: x, y, d, dip, L = 3, W = 2, unit dislocation, lambda = mu
OKADA_TABLE2 = [
    ((2, 3, 4, 70), (1, 0, 0), (-8.689e-3, -4.298e-3, -2.747e-3)),
    ((2, 3, 4, 70), (0, 1, 0), (-4.682e-3, -3.527e-2, -3.564e-2)),
    ((2, 3, 4, 70), (0, 0, 1), (-2.660e-4, +1.056e-2, +3.214e-3)),
    ((0, 0, 4, 90), (1, 0, 0), (0.0, +5.253e-3, 0.0)),
    ((0, 0, 4, 90), (0, 1, 0), (0.0, 0.0, 0.0)),
    ((0, 0, 4, 90), (0, 0, 1), (+1.223e-2, 0.0, -1.606e-2)),
    ((0, 0, 6, 90), (-1, 0, 0), (0.0, -1.303e-3, 0.0)),  # dip -90 as dip 90, rake 180
    ((0, 0, 6, 90), (0, 1, 0), (0.0, 0.0, 0.0)),
    ((0, 0, 6, 90), (0, 0, 1), (+3.507e-3, 0.0, -7.740e-3)),
]


@pytest.mark.parametrize(("geom", "slip", "expected"), OKADA_TABLE2)
def test_okada_table2(geom, slip, expected):
    x, y, d, dip = geom
    u = okada85_local(x, y, d, np.deg2rad(dip), 3.0, 2.0, *slip)
    np.testing.assert_allclose(u, expected, rtol=2e-3, atol=1e-8)


def test_okada_geographic_frame_matches_table2():
    # centroid-referenced call of the case-2 strike-slip fault, strike 90 (Beauducel convention)
    dip = np.deg2rad(70)
    u = okada85(2 - 1.5, 3 - np.cos(dip), 4 - np.sin(dip), 90, 70, 3, 2, 0, 1)
    np.testing.assert_allclose(
        [u.east, u.north, u.up], [-8.689e-3, -4.298e-3, -2.747e-3], rtol=2e-3
    )


def test_okada_vertical_strike_slip_symmetry_and_far_field():
    g = np.linspace(-20e3, 20e3, 81)
    e, n = g[None, :], g[:, None]
    u = okada85(e, n, 5e3, 0.0, 90.0, 6e3, 4e3, 0.0, 1.0)
    # strike-slip on a vertical fault: quadrant pattern of u_z, antisymmetric in e and in n
    np.testing.assert_allclose(u.up, -u.up[:, ::-1], atol=1e-12)
    np.testing.assert_allclose(u.up, -u.up[::-1, :], atol=1e-12)
    np.testing.assert_allclose(u.north, -u.north[:, ::-1], atol=1e-12)  # sides slide apart
    # a dislocation decays as r^-2 in the far field
    far = [
        okada85(r / np.sqrt(2), r / np.sqrt(2), 5e3, 0.0, 90.0, 6e3, 4e3, 0.0, 1.0)
        for r in (4e5, 8e5)
    ]
    mag = [np.sqrt(f.east**2 + f.north**2 + f.up**2) for f in far]
    assert mag[0] / mag[1] == pytest.approx(4.0, rel=0.02)


def test_okada_thrust_uplifts_hanging_wall():
    # strike 0 dips to the east: a thrust (rake 90) lifts the ground east of the trace
    u = okada85(np.array([-3e3, 3e3]), np.zeros(2), 3e3, 0.0, 45.0, 10e3, 4e3, 90.0, 1.0)
    assert u.up[1] > 0 and u.up[1] > u.up[0]


# ---- interferometric phase noise ----------------------------------------------------------------


@pytest.mark.parametrize("looks", [1, 4])
def test_phase_pdf_integrates_to_one(looks):
    psi = np.linspace(-np.pi, np.pi, 20001)
    for g in (0.2, 0.6, 0.9):
        assert np.trapezoid(phase_pdf(psi, g, looks), psi) == pytest.approx(1.0, abs=1e-6)


def test_phase_pdf_single_look_closed_form():
    g, psi = 0.7, np.linspace(-3, 3, 7)
    b = g * np.cos(psi)
    closed = (1 - g**2) / (2 * np.pi * (1 - b**2)) * (1 + b * np.arccos(-b) / np.sqrt(1 - b**2))
    np.testing.assert_allclose(phase_pdf(psi, g, 1), closed, rtol=1e-10)


def test_phase_std_limits():
    assert phase_std(0.0, 1) == pytest.approx(np.pi / np.sqrt(3), rel=1e-4)  # uniform phase
    g, L = 0.9, 50  # many looks: Cramer-Rao bound sqrt(1 - g^2) / (g sqrt(2 L))
    assert phase_std(g, L) == pytest.approx(np.sqrt(1 - g**2) / (g * np.sqrt(2 * L)), rel=0.05)


@pytest.mark.parametrize(("coherence", "looks"), [(0.3, 1), (0.6, 1), (0.9, 1), (0.6, 4), (0.9, 4)])
def test_correlated_phase_noise_matches_analytic_std(coherence, looks):
    eps = correlated_phase_noise(np.full(100_000, coherence), looks, np.random.default_rng(5))
    assert abs(np.angle(np.exp(1j * eps).mean())) < 0.02
    assert eps.std() == pytest.approx(phase_std(coherence, looks), rel=0.02)


def test_wrap_range():
    w = wrap(np.array([-np.pi, np.pi, 3 * np.pi, -7.0, 0.0, 1e-3]))
    assert w.dtype == np.float32 and (w > -np.pi).all() and (w <= np.pi).all()
    np.testing.assert_allclose(
        np.cos(w), np.cos([-np.pi, np.pi, 3 * np.pi, -7.0, 0.0, 1e-3]), atol=1e-6
    )


# ---- deformation generators ---------------------------------------------------------------------


def test_insar_unwrapped_labels_and_components():
    s = insar_unwrapped(9, 32, seed=4)
    assert s.images.shape == (9, 1, 32, 32) and s.images.dtype == np.float32
    np.testing.assert_array_equal(s.labels, np.arange(9) % 3)
    assert np.all(s.deformation[s.labels == 2] == 0)
    assert np.all(np.abs(s.deformation[s.labels != 2]).max(axis=(1, 2, 3)) > 0)
    noise = s.images - s.unwrapped
    assert noise.std() == pytest.approx(InsarNoiseParams().noise_std, rel=0.05)


def test_insar_unwrapped_mogi_amplitude_in_range():
    s = insar_unwrapped(30, 64, seed=0)
    lo, hi = 0.01, 0.2  # peak uplift range (m); the LOS phase peak lies between cos(46)/ .. bounds
    k = 4 * np.pi / 0.0555
    amp = np.abs(s.deformation[s.labels == 0]).max(axis=(1, 2, 3))
    assert (amp < k * hi * 1.01).all() and (amp > k * lo * np.cos(np.deg2rad(46)) * 0.5).all()


def test_insar_wrapped_pairs_and_noise():
    p = WrappedParams(coherence=(0.9, 0.9), coherence_std=0.0, looks=4)
    w = insar_wrapped(12, 32, seed=7, params=p)
    u = insar_unwrapped(12, 32, seed=7)
    assert w.images.dtype == np.float32
    assert (w.images > -np.pi).all() and (w.images <= np.pi).all()
    np.testing.assert_array_equal(w.unwrapped, u.unwrapped)  # same seed, same scene
    np.testing.assert_allclose(w.coherence, 0.9, atol=1e-6)
    resid = np.angle(np.exp(1j * (w.images.astype(np.float64) - w.unwrapped)))
    assert resid.std() == pytest.approx(phase_std(0.9, 4), rel=0.05)


# ---- SAR ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("looks", [1, 4, 10])
def test_gamma_speckle_enl(looks):
    s = sar_scenes(20, 32, seed=looks, params=SarParams(looks=looks))
    ratio = (s.images / s.clean).astype(np.float64)
    assert ratio.mean() == pytest.approx(1.0, rel=0.02)
    enl = ratio.mean() ** 2 / ratio.var()
    assert abs(enl - looks) < 0.1 * looks


def test_gamma_speckle_direct():
    s = gamma_speckle((200_000,), 3, np.random.default_rng(0))
    assert s.mean() == pytest.approx(1.0, abs=0.01) and s.var() == pytest.approx(1 / 3, rel=0.03)


def test_sar_labels_counts_and_db():
    s = sar_scenes(30, 16, seed=1)
    np.testing.assert_array_equal(np.bincount(s.labels, minlength=10), np.full(10, 3))
    assert (s.images > 0).all() and (s.clean > 0).all()
    d = sar_scenes(30, 16, seed=1, params=SarParams(db=True))
    np.testing.assert_allclose(d.images, 10 * np.log10(s.images.astype(np.float64)), atol=1e-4)


def test_sar_class_signatures():
    s = sar_scenes(100, 32, seed=1)
    db = 10 * np.log10(s.clean[:, 0].astype(np.float64)).reshape(100, -1)
    med = np.median(db, axis=1)
    bright = db.max(axis=1) - med  # dB above the median
    dark = med - np.percentile(db, 5, axis=1)  # dB below it

    def of(name, v):
        return v[s.labels == SAR_CLASSES.index(name)].mean()

    assert of("icebergs", bright) > 10.0  # +10 to +20 dB targets
    assert of("low_wind_area", dark) > 5.0  # -6 to -15 dB over 20-70 % of the scene
    assert of("pure_ocean_waves", bright) < 8.0 and of("pure_ocean_waves", dark) < 5.0


# ---- registry, files, seeds ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(GENERATORS))
def test_synthesize_writes_dataset_file(tmp_path, name):
    path = synthesize(name, 12, 16, tmp_path / f"{name}.h5", seed=3)
    with DatasetFile(path) as f:
        info = f.info
        assert info.n == 12 and info.shape == (1, 16, 16) and info.kind == GENERATORS[name].kind
        x = f.images()
        assert np.isfinite(x).all()
        if name == "insar_wrapped":
            assert set(info.extras) >= {"unwrapped", "coherence"}
            assert f.extra("unwrapped").shape == (12, 1, 16, 16)
            assert (x > -np.pi).all() and (x <= np.pi).all()
        if name == "sar":
            assert info.units == "linear" and info.class_names == SAR_CLASSES
            np.testing.assert_array_equal(f.labels(), np.arange(12) % 10)
        if name in ("insar_unwrapped", "insar_wrapped"):
            assert info.class_names == SOURCE_CLASSES and info.units == "rad"


def test_seeds_reproducible_and_distinct(tmp_path, monkeypatch):
    a = insar_noise(5, 16, seed=1)
    np.testing.assert_array_equal(a, insar_noise(5, 16, seed=1))
    assert not np.allclose(a, insar_noise(5, 16, seed=2))
    s1, s2 = sar_scenes(5, 16, seed=1), sar_scenes(5, 16, seed=2)
    assert not np.allclose(s1.images, s2.images)
    np.testing.assert_array_equal(s1.images, sar_scenes(5, 16, seed=1).images)
    # a longer run extends a shorter one; chunked file writing equals one call
    np.testing.assert_array_equal(insar_noise(256, 8, seed=9), insar_noise(300, 8, seed=9)[:256])
    monkeypatch.setattr("radardiff.data.synth._chunk", lambda size: 256)  # three chunks
    path = synthesize("insar_noise", 600, 8, tmp_path / "n.h5", seed=9)
    with DatasetFile(path) as f:
        np.testing.assert_array_equal(f.images(), insar_noise(600, 8, seed=9))
    path = synthesize("sar", 600, 8, tmp_path / "s.h5", seed=9)
    with DatasetFile(path) as f:
        np.testing.assert_array_equal(f.labels(), np.arange(600) % 10)
        np.testing.assert_array_equal(f.images(), sar_scenes(600, 8, seed=9).images)


def test_params_override_and_errors(tmp_path):
    p = build_params("insar_wrapped", {"looks": 2, "deformation.atmosphere.beta": 2.0})
    assert p.looks == 2 and p.deformation.atmosphere.beta == 2.0
    path = synthesize("sar", 10, 8, tmp_path / "db.h5", params={"db": True, "store_clean": True})
    with DatasetFile(path) as f:
        assert f.info.units == "dB" and "clean" in f.info.extras
    assert build_params("sar", {"db": "false", "looks": "8"}) == SarParams(looks=8, db=False)
    with pytest.raises(ConfigError, match="'looks' must be int"):
        build_params("sar", {"looks": 2.5})
    with pytest.raises(ConfigError, match="'db' must be bool"):
        build_params("sar", {"db": "maybe"})
    with pytest.raises(ConfigError, match="'looks' must be >= 1"):
        build_params("insar_wrapped", {"looks": 0})
    with pytest.raises(ConfigError, match="'coherence'"):
        build_params("insar_wrapped", {"coherence": [0.5, 1.2]})
    with pytest.raises(ConfigError, match="'beta'"):
        build_params("insar_noise", {"beta": -1})
    with pytest.raises(ConfigError, match="unknown parameter 'bogus'"):
        build_params("sar", {"bogus": 1})
    with pytest.raises(ConfigError, match="background_db"):
        build_params("sar", {"background_db": [1.0]})
    with pytest.raises(DataError, match="unknown synthetic kind"):
        synthesize("nope", 1, 8, tmp_path / "x.h5")
    with pytest.raises(DataError, match="--n"):
        synthesize("sar", 0, 8, tmp_path / "x.h5")
    with pytest.raises(DataError, match="--size"):
        synthesize("sar", 1, 4, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_pixel_spacing_option(tmp_path):
    """--pixel-spacing: recorded for the scale-free insar_noise (same pixels), the extent of a
    deformation scene (elastic sources in metres: other pixels); bad values refused."""

    a = synthesize("insar_noise", 3, 16, tmp_path / "a.h5", seed=1)
    b = synthesize("insar_noise", 3, 16, tmp_path / "b.h5", seed=1, pixel_spacing_m=150.0)
    with DatasetFile(a) as fa, DatasetFile(b) as fb:
        assert (fa.info.pixel_spacing_m, fb.info.pixel_spacing_m) == (100.0, 150.0)
        np.testing.assert_array_equal(fa.images(), fb.images())
    c = synthesize("insar_unwrapped", 2, 16, tmp_path / "c.h5", pixel_spacing_m=50.0)
    d = synthesize("insar_unwrapped", 2, 16, tmp_path / "d.h5", params={"extent_m": 800.0})
    with DatasetFile(c) as fc, DatasetFile(d) as fd:
        assert fc.info.pixel_spacing_m == 50.0
        np.testing.assert_array_equal(fc.images(), fd.images())  # extent = 50 m x 16
    with pytest.raises(DataError, match="give one"):
        synthesize("insar_unwrapped", 2, 16, tmp_path / "e.h5", params={"extent_m": 1.0},
                   pixel_spacing_m=50.0)  # fmt: skip
    with pytest.raises(DataError, match="--pixel-spacing must be a positive"):
        synthesize("insar_noise", 2, 16, tmp_path / "f.h5", pixel_spacing_m=0.0)
    assert not (tmp_path / "e.h5").exists() and not (tmp_path / "f.h5").exists()
