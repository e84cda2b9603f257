"""One forward operator: the public ``physics.forward_intensities``, the engine's ``ForwardModel`` and the pass the
exit-wave solvers read (``keep_waves``) are one code path, so they give the same intensities, detector PSF,
tilts, modes and band limit included; and what the model adds (here the detector PSF) reaches the classical
solvers."""

import numpy as np
import pytest
import torch

from ptyopt.physics import forward_intensities, slice_propagator, split_positions
from ptyopt.solvers.exitwave import detected_intensity

from .conftest import make_batch, make_solver_on, random_state, simulate

INDICES = torch.tensor([0, 3, 6, 9, 12, 15])


@pytest.mark.parametrize("blur_px", [0.0, 0.8])
def test_public_function_engine_model_and_exit_wave_pass_give_the_same_intensities(make_problem, blur_px):
    problem = make_problem(n_slices=3, slice_thickness_ang=2.0, probe_modes=2, object_modes=2, band_limit=True,
                           propagate_last=True, tilt_mode="each", detector_blur_px=blur_px,
                           optimize={"tilts": {"lr": 1e-3, "start_iter": 1}})
    state = random_state(problem, seed=7)
    state["occupancy"] = torch.tensor([0.7, 0.3], dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    state["position_offsets_px"] = 0.8 * torch.rand(state["position_offsets_px"].shape, generator=generator,
                                                    dtype=torch.float64) - 0.4
    state["tilts_mrad"] = 3 * torch.randn(state["tilts_mrad"].shape, generator=generator, dtype=torch.float64)
    model = problem.model
    crop, shift = split_positions(model.centres_px(state, INDICES), problem.geometry.window_px)
    public = forward_intensities(state["object_amplitude"], state["object_phase"], state["probe"], crop, shift,
                                 model.propagators(state, INDICES), model.occupancy(state), propagate_last=True,
                                 detector_blur_px=blur_px)
    engine = model(state, INDICES).intensities
    kept = model(state, INDICES, keep_waves=True)
    assert torch.equal(public, engine) and torch.equal(kept.intensities, engine)
    waves = kept.waves
    solvers_view = torch.fft.fftshift(detected_intensity(waves.far_field, kept.occupancy, waves.detector),
                                      dim=(-2, -1))
    torch.testing.assert_close(solvers_view, engine, rtol=1e-13, atol=0)
    assert waves.incident.shape == (len(INDICES), 2, 2, 3, 16, 16)
    # the far field is the exit wave's spectrum times the last propagator (propagate_last)
    far = torch.fft.fft2(waves.exit_waves, norm="ortho") * slice_propagator(waves.propagators, 2)
    torch.testing.assert_close(far, waves.far_field, rtol=1e-12, atol=1e-12)
    unblurred = torch.fft.fftshift((waves.far_field.abs() ** 2 * kept.occupancy[:, None, None]).sum(dim=(1, 2)),
                                   dim=(-2, -1))
    assert torch.allclose(unblurred, engine, rtol=1e-12) == (blur_px == 0)  # the PSF is in all three


@pytest.mark.parametrize("name", ["epie", "rpie", "lsqml"])
def test_classical_solvers_fit_data_with_a_detector_psf(make_problem, name):
    """Data simulated with a 0.8 px detector PSF: the solver with the PSF in its model lowers the amplitude misfit
    far more than the same solver that ignores the PSF (which cannot fit blurred patterns)."""
    errors = {}
    for blur in (0.8, 0.0):
        truth_problem = make_problem(detector_blur_px=0.8)
        problem = make_problem(detector_blur_px=blur)
        truth = random_state(truth_problem, seed=1, phase_rad=0.4)
        state = {key: value.clone() for key, value in truth_problem.initial_state.items()}
        state["probe"] = truth["probe"].clone()
        solver = make_solver_on(problem, name, {}, state, active=("object_amplitude", "object_phase"))
        for _ in range(8):
            for group in ([0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14]):
                solver.update(make_batch(truth_problem, truth, group), True)
        indices = np.arange(16)
        fitted, measured = simulate(truth_problem, state, indices), simulate(truth_problem, truth, indices)
        errors[blur] = float(((fitted.sqrt() - measured.sqrt()) ** 2).sum() / measured.sum())
    print(f"{name}: amplitude misfit with the PSF {errors[0.8]:.3g}, without {errors[0.0]:.3g}")
    assert errors[0.8] < 0.5 * errors[0.0]
