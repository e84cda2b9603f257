"""abTEM as an oracle: ptyopt's probe and multislice, fed abTEM's slice potentials on abTEM's grid, must
reproduce abTEM's probe and CBED patterns (research/simulation.md §1.5-1.7, §3.3, §6.2 "T1").

Conventions reconciled (abTEM 1.0.11 source):
- axes: abTEM arrays are [x, y] (``core/grid.py`` ``spatial_frequencies``/``polar_spatial_frequencies``,
  phi = atan2(ky, kx)); ptyopt's are [y, x] -> every abTEM array is transposed; positions (x, y) Å -> (y, x) px.
- probe: ``Probe._calculate_array`` (waves.py) applies aperture, aberrations and the position ramp
  exp(-2 pi i k·r) (``fft_shift_kernel``) in k-space, normalises sum_k |Psi|^2 = 1, then numpy ``ifft2``, so
  sum_r |psi|^2 = 1/N. ptyopt: sum_r |psi|^2 = 1 -> psi_ptyopt / sqrt(N) = psi_abtem (global phase included).
- patterns: ``Waves._diffraction_pattern`` is |fft2(psi)|^2 (unnormalised FFT of a 1/N-normalised wave) =
  ptyopt's |ortho fft2|^2 of a unit-power wave: no rescaling. ``fftshift`` puts DC at N//2 like ptyopt.
- step: ``conventional_multislice_step`` (multislice.py): transmit, then propagate, for every slice including
  the last (ptyopt ``propagate_last=True``); t = exp(i sigma v_z) (``PotentialArray._transmission_function``).
- band limit: ``AntialiasAperture.bandlimit`` (antialias.py) convolves t with ``antialias_aperture`` and
  ``FresnelPropagator._calculate_array`` multiplies P by it. That aperture is 1 for |k| <= c - w, a raised
  cosine 0.5 (1 + cos(pi (|k| - c + w) / w)) for c - w < |k| <= c, 0 beyond, with c = 0.6666666 / (2 dx) and
  w = 0.01 / dx (``antialias.cutoff``/``taper``). ptyopt's ``band_limit=True`` is a hard |k| <= (2/3) k_Nyq disk,
  which differs by ~1e-2 here, so the test takes the mask from abTEM's own ``antialias_aperture`` and applies it
  to t and to an un-band-limited ``ptyopt.physics.propagator``.
- constants: abTEM uses ase.units (CODATA 2014), ptyopt CODATA 2018: lambda and sigma differ by ~6e-9 relative,
  which bounds the agreement (~4e-9) far below the 1e-4 tolerance.
"""

import numpy as np
import pytest
import torch

abtem = pytest.importorskip("abtem")
ase = pytest.importorskip("ase")
dask = pytest.importorskip("dask")

from abtem.antialias import antialias_aperture  # noqa: E402

from ptyopt.physics import (  # noqa: E402
    forward_intensities,
    fourier_shift,
    frequency_grid,
    interaction_constant,
    make_probe,
    propagator,
    split_positions,
    transmission,
    wavelength_ang,
)

pytestmark = pytest.mark.abtem

A_ANG = 3.905  # SrTiO3 lattice constant
ENERGY_KV = 300.0
CONV_MRAD = 21.4
DEFOCUS_ANG = 50.0  # abTEM defocus = -C10 = ptyopt "defocus"
GPTS = 48
POSITIONS_XY_ANG = np.array([[1.3, 2.1], [4.2, 0.7], [6.1, 5.5]])  # abTEM order (x, y), off the pixel grid
TOL = 1e-4


@pytest.fixture(scope="module")
def abtem_config():
    # float64 for a bit-level comparison; numpy FFT avoids FFTW planning time and wisdom files; the
    # synchronous dask scheduler is deterministic and light on a 2-core machine.
    settings = {"precision": "float64", "diagnostics.progress_bar": False, "fft": "numpy"}
    with abtem.config.set(settings), dask.config.set(scheduler="synchronous"):
        yield


def _sto_atoms():
    """2x2x2 SrTiO3 cells, shifted by a/4 in z so that each atomic plane sits in the middle of an a/2 slice.

    Ti is displaced by 0.2 Å along x: cubic SrTiO3 is mirror-symmetric under x <-> y, which would hide a
    mixed-up axis order of the potential (a missing transpose then changes nothing).
    """
    cell = ase.Atoms(
        "SrTiO3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[A_ANG] * 3,
        pbc=True,
    )
    atoms = cell * (2, 2, 2)
    atoms.positions[:, 2] += A_ANG / 4
    atoms.positions[np.array(atoms.get_chemical_symbols()) == "Ti", 0] += 0.2
    return atoms


@pytest.fixture(scope="module")
def potential(abtem_config):
    """abTEM's slice potentials (PotentialArray, array (S, nx, ny) in V·Å), built once and reused by abTEM."""
    return abtem.Potential(_sto_atoms(), gpts=GPTS, slice_thickness=A_ANG / 2).build().compute()


def _abtem_probe(potential, **aberrations):
    return abtem.Probe(
        energy=ENERGY_KV * 1e3,
        semiangle_cutoff=CONV_MRAD,
        soft=False,
        gpts=GPTS,
        extent=potential.extent,
        **aberrations,
    )


def _abtem_probe_waves(potential, aberrations):
    """abTEM probes at POSITIONS_XY_ANG, transposed to ptyopt's [y, x]: (N, Y, X)."""
    waves = _abtem_probe(potential, **aberrations).build(abtem.CustomScan(POSITIONS_XY_ANG)).compute()
    return torch.from_numpy(waves.array.transpose(0, 2, 1).copy())


@pytest.fixture(scope="module")
def abtem_patterns(potential):
    """abTEM's CBED at POSITIONS_XY_ANG, full grid (no crop), DC at N//2, transposed to [ky, kx]."""
    detector = abtem.PixelatedDetector(max_angle="full")
    patterns = _abtem_probe(potential, defocus=DEFOCUS_ANG).multislice(
        potential, scan=abtem.CustomScan(POSITIONS_XY_ANG), detectors=detector
    )
    return torch.from_numpy(patterns.compute().array.transpose(0, 2, 1).copy())


def _abtem_antialias_yx(potential):
    """abTEM's own antialias aperture on the unshifted FFT grid, transposed to [ky, kx]."""
    mask = antialias_aperture((GPTS, GPTS), potential.sampling, xp=np)
    return torch.from_numpy(np.ascontiguousarray(mask.T, dtype=np.float64))


def _positions_yx_px(potential):
    return torch.from_numpy(POSITIONS_XY_ANG[:, ::-1] / np.asarray(potential.sampling)[::-1])


def _ptyopt_patterns(potential, propagator_sign=1.0, axes=(0, 2, 1)):
    """ptyopt's forward model on abTEM's potential: (N, Ky, Kx), DC at N//2.

    propagator_sign and axes exist only so that the negative test can inject a convention error."""
    dx = potential.sampling[0]
    mask = _abtem_antialias_yx(potential)
    v_yx = torch.from_numpy(potential.array.transpose(axes).copy())  # (S, Y, X) [V·Å]
    t = transmission(torch.ones_like(v_yx), interaction_constant(ENERGY_KV) * v_yx)
    t = torch.fft.ifft2(torch.fft.fft2(t) * mask)  # abTEM band-limits t (AntialiasAperture.bandlimit)
    # The cell is periodic; tiling it 3x3 lets gather_patches cut a full-cell window around any position.
    obj = t.repeat(1, 3, 3)[None]  # (omode=1, S, 3Y, 3X)
    ky, kx = frequency_grid((GPTS, GPTS), dx, dtype=torch.float64)
    dz = propagator_sign * torch.tensor(potential.slice_thickness)
    props = propagator(ky, kx, dz, wavelength_ang(ENERGY_KV), band_limit=False) * mask  # (S, Y, X)
    probe = make_probe((GPTS, GPTS), dx, ENERGY_KV, CONV_MRAD, {"defocus": DEFOCUS_ANG}, dtype=torch.complex128)[None]
    # Probe centre in tiled-object px; +GPTS (one cell) keeps every window inside the tiled object.
    crop, shift = split_positions(_positions_yx_px(potential) + GPTS, (GPTS, GPTS))
    occupancy = torch.ones(1, dtype=torch.float64)
    return forward_intensities(obj.abs(), obj.angle(), probe, crop, shift, props, occupancy, propagate_last=True)


def _relative_difference(pattern, reference):
    """max |I - I_ref| / max I_ref per position, over the full (uncropped) pattern."""
    return ((pattern - reference).abs().amax(dim=(-2, -1)) / reference.amax(dim=(-2, -1))).tolist()


def _overlap(a, b):
    """|<a, b>| / (|a| |b|) per position: 1 for identical waves up to scale and global phase."""
    inner = (a.conj() * b).sum(dim=(-2, -1)).abs()
    return inner / (torch.linalg.vector_norm(a, dim=(-2, -1)) * torch.linalg.vector_norm(b, dim=(-2, -1)))


@pytest.mark.parametrize(
    "aberrations",
    [
        {"defocus": DEFOCUS_ANG},
        {"defocus": DEFOCUS_ANG, "Cs": 1e4},
        # non-round aberrations pin the [x, y] -> [y, x] transpose and the azimuth convention
        {"defocus": DEFOCUS_ANG, "C12": 20.0, "phi12": 0.3, "C21": 500.0, "phi21": 0.7, "C23": 300.0, "phi23": 0.2},
    ],
    ids=["defocus", "Cs", "astig-coma-trefoil"],
)
def test_probe_matches_abtem_and_defocus_sign_matters(potential, aberrations):
    reference = _abtem_probe_waves(potential, aberrations)
    centre = torch.tensor([GPTS // 2, GPTS // 2], dtype=torch.float64)

    def ptyopt_probes(aberr):
        probe = make_probe((GPTS, GPTS), potential.sampling[0], ENERGY_KV, CONV_MRAD, aberr, dtype=torch.complex128)
        return fourier_shift(probe, _positions_yx_px(potential) - centre)  # centred at pixel (0, 0) + position

    probes = ptyopt_probes(aberrations)
    assert (_overlap(probes, reference) >= 1 - 1e-10).all()
    # Same scale and global phase too: abTEM's probe has sum |psi|^2 = 1/N, ptyopt's 1.
    assert torch.allclose(probes / GPTS, reference, rtol=0, atol=1e-7 * reference.abs().max())
    flipped = ptyopt_probes({**aberrations, "defocus": -DEFOCUS_ANG})
    assert (_overlap(flipped, reference) < 0.5).all()


def test_multislice_matches_abtem(potential, abtem_patterns):
    patterns = _ptyopt_patterns(potential)
    assert patterns.shape == abtem_patterns.shape == (len(POSITIONS_XY_ANG), GPTS, GPTS)
    rel = _relative_difference(patterns, abtem_patterns)
    assert max(rel) <= TOL, rel
    # No rescaling was needed: the totals (< 1, lost to the band limit) agree as well.
    assert torch.allclose(patterns.sum(dim=(-2, -1)), abtem_patterns.sum(dim=(-2, -1)), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "error", [{"propagator_sign": -1.0}, {"axes": (0, 1, 2)}], ids=["propagator-sign", "potential-not-transposed"]
)
def test_convention_errors_break_agreement(potential, abtem_patterns, error):
    # The oracle must be sensitive: exp(+i pi lambda dz k^2) or abTEM's [x, y] potential used as [y, x] fails.
    rel = _relative_difference(_ptyopt_patterns(potential, **error), abtem_patterns)
    assert min(rel) > 1e-2, rel
