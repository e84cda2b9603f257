"""Exit-wave machinery of the classical solvers (ePIE/rPIE/mPIE, LSQ-ML): pure tensor functions.

They read the forward model's own pass (``physics.MultisliceWaves``, from ``ForwardModel(..., keep_waves=True)``):
the wave entering every slice, the transmissions, the propagators and the far field. Shapes: B positions,
p probe modes, o object modes, S slices, (Y, X) probe window, (h, w) a canvas box. Waves are (B, p, o, [S,] Y, X)
complex. Conventions are the forward model's (``ptyopt.physics.multislice``): transmit then propagate,
orthonormal FFTs, far fields in the unshifted layout, measured patterns fftshifted (DC at K//2), model intensity
I = sum_{p,o} occ_o |Psi_po|^2 and detected intensity D I (``physics.DetectorResponse``: a Gaussian PSF or none);
the far-field updates pull the detector residual back with Dᵀ, so they are exact gradient steps with a PSF too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ptyopt.physics import DetectorResponse, MultisliceWaves, gather_patches, propagate, slice_propagator
from ptyopt.physics.shift import shift_ramp


def back_propagate(psi: Tensor, h: Tensor) -> Tensor:
    """The adjoint of ``propagate``: F^-1[conj(H) F psi] (the inverse where |H| = 1)."""
    return torch.fft.ifft2(torch.fft.fft2(psi, norm="ortho") * h.conj(), norm="ortho")


def model_intensity(far_field: Tensor, occupancy: Tensor) -> Tensor:
    """I = sum_{p,o} occ_o |Psi_po|^2, (B, Y, X) in the unshifted layout."""
    return ((far_field.real**2 + far_field.imag**2) * occupancy[:, None, None]).sum(dim=(1, 2))


def unshifted(meas: Tensor) -> Tensor:
    """Measured patterns (B, K, K) with DC at K//2 -> the FFT layout, negative counts clipped."""
    return torch.fft.ifftshift(meas.clamp(min=0), dim=(-2, -1))


def intensity_floor(meas: Tensor, relative: float = 0.0) -> Tensor:
    """eps of I + eps, (B, 1, 1): (relative + machine epsilon^2) times each pattern's mean. The epsilon^2 part
    only keeps empty model pixels finite (lit ones are untouched to working precision)."""
    info = torch.finfo(meas.dtype)
    return ((relative + info.eps**2) * meas.clamp(min=0).mean(dim=(-2, -1), keepdim=True)).clamp(min=info.tiny)


def detected_intensity(far_field: Tensor, occupancy: Tensor, detector: DetectorResponse) -> Tensor:
    """D I, (B, Y, X) in the unshifted layout."""
    return detector.fft_layout(model_intensity(far_field, occupancy))


def modulus_constraint(far_field: Tensor, meas: Tensor, occupancy: Tensor, detector: DetectorResponse) -> Tensor:
    """Mixed-state modulus replacement Psi'_m = r · Psi_m, r = sqrt(y) / sqrt(D I + eps) (the detector
    residual step Psi - g/2 of ``detector_gradient``, gaussian). With a detector PSF, r is replaced by its
    pull-back 1 - Dᵀ(1 - r) (the same step; without a PSF it simplifies to r).

    far_field (B, p, o, Y, X) unshifted; meas (B, K, K) fftshifted; occupancy (o,) normalised; detector: the
    model's (``MultisliceWaves.detector``).
    """
    y = unshifted(meas)
    ratio = torch.sqrt(y) / torch.sqrt(detected_intensity(far_field, occupancy, detector) + intensity_floor(meas))
    if not detector.is_identity:
        ratio = 1 - detector.adjoint_fft_layout(1 - ratio)
    return far_field * ratio[:, None, None]


def detector_gradient(far_field: Tensor, meas: Tensor, occupancy: Tensor, noise: str, detector: DetectorResponse,
                      floor: float = 0.0) -> Tensor:
    """g_m = 2 dL/dconj(Psi_m) / occ_m (torch's complex-gradient convention, per unit occupancy).

    gaussian: L = sum (sqrt(D I + eps) - sqrt(y))^2 -> g = 2 Dᵀ(1 - sqrt(y) / sqrt(D I + eps)) Psi;
    poisson:  L = sum (D I + eps) - y ln(D I + eps)   -> g = 2 Dᵀ(1 - y / (D I + eps)) Psi.
    eps = ``intensity_floor(meas, floor)``: a detector floor (a fraction of the mean measured intensity).
    """
    y = unshifted(meas)
    intensity = detected_intensity(far_field, occupancy, detector) + intensity_floor(meas, floor)
    if noise == "gaussian":
        factor = 1 - torch.sqrt(y) / torch.sqrt(intensity)
    elif noise == "poisson":
        factor = 1 - y / intensity
    else:
        raise ValueError(f"noise must be 'gaussian' or 'poisson', got {noise!r}")
    return 2 * detector.adjoint_fft_layout(factor)[:, None, None] * far_field


def poisson_detector_step(far_field: Tensor, meas: Tensor, occupancy: Tensor, detector: DetectorResponse,
                          floor: float = 0.0, newton_steps: int = 8) -> Tensor:
    """Per-position alpha (B,) minimising the Poisson L(Psi - alpha g) over alpha in [0, 1/2] (Newton, convex).

    With c = Dᵀ(1 - y/(D I + eps)), Psi - alpha g = (1 - 2 alpha c) Psi, so I(alpha) = (1 - 2 alpha c)^2 I and
    L(alpha) = sum D I(alpha) + eps - y ln(D I(alpha) + eps), D linear; eps as in ``detector_gradient``.
    """
    y = unshifted(meas)
    eps = intensity_floor(meas, floor)
    intensity = model_intensity(far_field, occupancy)
    d = detector.fft_layout
    c = detector.adjoint_fft_layout(1 - y / (d(intensity) + eps))
    alpha = torch.full(y.shape[:1], 0.25, dtype=y.dtype, device=y.device)
    for _ in range(newton_steps):
        u = 1 - 2 * alpha[:, None, None] * c
        i_alpha = d(u**2 * intensity) + eps
        di = d(-4 * c * u * intensity)
        ratio = y / i_alpha
        first = ((1 - ratio) * di).sum(dim=(-2, -1))
        second = ((1 - ratio) * d(8 * c**2 * intensity) + ratio / i_alpha * di**2).sum(dim=(-2, -1))
        alpha = (alpha - first / second.clamp(min=torch.finfo(y.dtype).tiny)).clamp(0.0, 0.5)
    return alpha


def exit_wave_change(far_field_change: Tensor, propagators: Tensor, propagate_last: bool) -> Tensor:
    """Real-space exit-wave change chi = F^-1[conj(H_last) dPsi] (the adjoint of exit wave -> far field)."""
    if propagate_last:
        far_field_change = far_field_change * slice_propagator(propagators, -1).conj()
    return torch.fft.ifft2(far_field_change, norm="ortho")


def backward_sweep(chi_exit: Tensor, waves: MultisliceWaves) -> Tensor:
    """3PIE back-propagation of an exit-wave change through the slices -> chi (B, p, o, S, Y, X).

    chi^s is the change of the wave leaving slice s (psi^s · t_s); from last to first slice, the incident wave's
    change is delta^s = conj(t_s) chi^s / max|t_s|^2 (max over the window, per position and object mode) and
    chi^{s-1} = back_propagate(delta^s, H_{s-1}).
    """
    n_slices = len(waves.slices)
    chis: list[Tensor] = [chi_exit] * n_slices
    for s in range(n_slices - 1, 0, -1):
        t = waves.slices[s][:, None]
        peak = (t.real**2 + t.imag**2).amax(dim=(-2, -1), keepdim=True).clamp(min=torch.finfo(t.real.dtype).tiny)
        chis[s - 1] = back_propagate(t.conj() * chis[s] / peak, slice_propagator(waves.propagators, s - 1))
    return torch.stack(chis, dim=3)


def exit_response(waves: MultisliceWaves, d_probes: Tensor | None = None,
                  d_transmissions: Tensor | None = None) -> Tensor:
    """First-order change of the exit wave psi^{S-1} t_{S-1} (B, p, o, Y, X) for a change d_probes (B, p, Y, X)
    of the incident probes and d_transmissions (B, o, S, Y, X) of the transmissions (a JVP of the multislice)."""
    n_slices = len(waves.slices)
    if d_probes is None:
        d = torch.zeros_like(waves.incident[:, :, :, 0])
    else:
        d = d_probes[:, :, None].expand_as(waves.incident[:, :, :, 0])
    for s in range(n_slices):
        d = d * waves.slices[s][:, None]
        if d_transmissions is not None:
            d = d + waves.incident[:, :, :, s] * d_transmissions[:, None, :, s]
        if s < n_slices - 1:
            d = propagate(d, slice_propagator(waves.propagators, s))
    return d


# ---- canvas scatter / gather -------------------------------------------------------------------------------


def patch_box(crop_px: Tensor, window_px: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of the canvas box that holds every window of the batch."""
    low = crop_px.min(dim=0).values
    high = crop_px.max(dim=0).values
    return int(low[0]), int(low[1]), int(high[0] - low[0]) + window_px[0], int(high[1] - low[1]) + window_px[1]


def scatter_patches(patches: Tensor, crop_px: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """Sum of per-position patches (B, *lead, Y, X) on the box canvas (*lead, h, w): one index_add."""
    y0, x0, h, w = box
    window = patches.shape[-2:]
    rows = crop_px[:, 0, None] - y0 + torch.arange(window[0], device=crop_px.device)
    cols = crop_px[:, 1, None] - x0 + torch.arange(window[1], device=crop_px.device)
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(-1)  # (B·Y·X,)
    lead = patches.shape[1:-2]
    values = patches.movedim(0, -3).reshape(*lead, -1)
    out = torch.zeros(*lead, h * w, dtype=patches.dtype, device=patches.device)
    return out.index_add_(-1, flat, values).reshape(*lead, h, w)


def gather_box(canvas: Tensor, crop_px: Tensor, box: tuple[int, int, int, int], window_px) -> Tensor:
    """Windows of a box canvas (*lead, h, w) -> (B, *lead, Y, X)."""
    offset = torch.tensor(box[:2], device=crop_px.device)
    return gather_patches(canvas, crop_px - offset, window_px)


def blended_denominator(illumination: Tensor, blend: float) -> Tensor:
    """rPIE denominator (1 - a) W + a max W (max over the last two axes); a = 1 gives ePIE's max W."""
    peak = illumination.amax(dim=(-2, -1), keepdim=True)
    return ((1 - blend) * illumination + blend * peak).clamp(min=torch.finfo(illumination.dtype).tiny)


def damped_denominator(illumination: Tensor, delta: float) -> Tensor:
    """LSQ-ML preconditioner W + delta max W (max over the last two axes)."""
    peak = illumination.amax(dim=(-2, -1), keepdim=True)
    return (illumination + delta * peak).clamp(min=torch.finfo(illumination.dtype).tiny)


def unshift(images: Tensor, shift_px: Tensor) -> Tensor:
    """Undo the sub-pixel probe shift (the adjoint of ``shift_probes``): (B, p, Y, X), shifts (B, 2)."""
    ramp = shift_ramp(images.shape[-2:], -shift_px.to(images.real.dtype))
    return torch.fft.ifft2(torch.fft.fft2(images) * ramp[:, None])


def object_terms(chis: Tensor, incident: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position object numerator sum_p conj(psi^s) chi^s and illumination sum_p |psi^s|^2, (B, o, S, Y, X)."""
    return (incident.conj() * chis).sum(dim=1), (incident.real**2 + incident.imag**2).sum(dim=1)


def probe_terms(chis: Tensor, first_slice: Tensor, occupancy: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position probe numerator sum_o occ_o conj(t_o0) chi^0_po (B, p, Y, X) and the batch's
    illumination sum_{j,o} occ_o |t_jo0|^2 (Y, X) of the first slice."""
    t0 = first_slice  # (B, o, Y, X)
    weights = occupancy[:, None, None]
    numerator = (weights * t0.conj()[:, None] * chis[:, :, :, 0]).sum(dim=2)
    return numerator, (weights * (t0.real**2 + t0.imag**2)).sum(dim=(0, 1))


# ---- positions -------------------------------------------------------------------------------------------------


def probe_shift_derivative(probes: Tensor) -> Tensor:
    """d/ds of the shifted probes (B, p, Y, X) -> (B, p, 2, Y, X): F^-1[-2 pi i f_a F(P_s)] per axis a = (y, x)."""
    shape = probes.shape[-2:]
    fy = torch.fft.fftfreq(shape[0], dtype=probes.real.dtype, device=probes.device)[:, None]
    fx = torch.fft.fftfreq(shape[1], dtype=probes.real.dtype, device=probes.device)[None, :]
    spectrum = torch.fft.fft2(probes)[:, :, None]
    ramps = torch.stack([fy.expand(shape), fx.expand(shape)])  # (2, Y, X)
    return torch.fft.ifft2(spectrum * (-2j * math.pi) * ramps)


def far_field_of(exit_wave: Tensor, waves: MultisliceWaves) -> Tensor:
    """F(exit wave) (· H_last when the model propagates after the last slice)."""
    far_field = torch.fft.fft2(exit_wave, norm="ortho")
    if waves.propagate_last:
        far_field = far_field * slice_propagator(waves.propagators, -1)
    return far_field


def position_system(waves: MultisliceWaves, meas: Tensor, occupancy: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position Gauss-Newton normal equations G_n delta_n = g_n (B, 2, 2), (B, 2) of the probe shift [px] for
    the amplitude misfit sum (sqrt(y) - sqrt(D I))^2.

    The far-field derivative dPsi/ds_a is the exit-wave response (``exit_response``) of the probe's spatial
    derivative dP_s/ds_a, so d sqrt(D I)/ds_a = D[sum_{p,o} occ_o Re(conj(Psi) dPsi/ds_a)] / sqrt(D I); the
    equations are those of sqrt(y) - sqrt(D I) ≈ sum_a ds_a d sqrt(D I)/ds_a.
    """
    g = probe_shift_derivative(waves.probes)
    detector = waves.detector
    amplitude = torch.sqrt(detected_intensity(waves.far_field, occupancy, detector) + intensity_floor(meas))
    weights = occupancy[:, None, None]
    jacobian = torch.stack([
        detector.fft_layout((weights * (waves.far_field.conj() * far_field_of(
            exit_response(waves, d_probes=g[:, :, a]), waves)).real).sum(dim=(1, 2))) / amplitude
        for a in range(2)
    ], dim=1)  # (B, 2, Y, X)
    residual = torch.sqrt(unshifted(meas)) - amplitude
    return torch.einsum("bayx,bcyx->bac", jacobian, jacobian), torch.einsum("bayx,byx->ba", jacobian, residual)


def position_steps(gram: Tensor, rhs: Tensor, max_step_px: float) -> Tensor:
    """The shifts (B, 2) [px] solving ``position_system``'s equations (a 1e-9·trace floor), each axis clipped to
    ±max_step_px."""
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    return solve_2x2(gram, rhs, 1e-9 * trace[:, None]).clamp(-max_step_px, max_step_px)


# ---- LSQ-ML step lengths --------------------------------------------------------------------------------------


def normal_equations(chi: Tensor, responses: list[Tensor], occupancy: Tensor) -> tuple[Tensor, Tensor]:
    """A (B, k, k) and b (B, k) of min_alpha sum_{p,o} occ_o ||chi - sum_i alpha_i r_i||^2 per position:
    A_ik = Re<r_i, r_k>, b_i = Re<r_i, chi> (occupancy-weighted). chi, r_i: (B, p, o, Y, X)."""
    r = torch.stack(responses, dim=1)  # (B, k, p, o, Y, X)
    weighted = r * occupancy[:, None, None].to(r.dtype)
    a = torch.einsum("bipoyx,bkpoyx->bik", weighted.conj(), r).real
    b = torch.einsum("bipoyx,bpoyx->bi", weighted.conj(), chi).real
    return a, b


def solve_2x2(a: Tensor, b: Tensor, damping: Tensor | float = 0.0) -> Tensor:
    """Closed-form solution of (A + diag(damping)) alpha = b for A (B, k, k), k = 1 or 2 (Cramer's rule);
    damping broadcasts against (B, k)."""
    d = torch.as_tensor(damping, dtype=a.dtype, device=a.device).expand(b.shape)
    tiny = torch.finfo(a.dtype).tiny
    if a.shape[-1] == 1:
        return b / (a[:, 0] + d).clamp(min=tiny)
    a11 = a[:, 0, 0] + d[:, 0]
    a22 = a[:, 1, 1] + d[:, 1]
    a12 = 0.5 * (a[:, 0, 1] + a[:, 1, 0])
    det = (a11 * a22 - a12**2).clamp(min=tiny)
    return torch.stack([(a22 * b[:, 0] - a12 * b[:, 1]) / det, (a11 * b[:, 1] - a12 * b[:, 0]) / det], dim=1)
