"""The iteration loop: batches, schedules, optimiser steps, constraints, NaN guard, checkpoints, progress.

The engine owns the loop; the optimiser only updates. Each iteration visits every position once in groups
(ordered by (seed, iteration), so a resumed run repeats exactly), then applies the active constraints.
Solver stages (``solver.switch``): at a stage's start_iter the engine builds its solver on the same live state;
the forward-evaluation count continues, history logs ``solver_stage`` and checkpoints keep the stage.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from ptyopt.batching import GroupSampler
from ptyopt.errors import ConfigError, PtyoptError
from ptyopt.io.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ptyopt.model.tensors import STATE_KEYS
from ptyopt.objective.adaptation import Adaptation
from ptyopt.objective.constraints import ConstraintContext, apply_constraints, build_constraints
from ptyopt.objective.losses import build_losses, loss_values
from ptyopt.objective.schedules import as_schedule
from ptyopt.problem import Problem
from ptyopt.progress import progress_bar
from ptyopt.solvers import Batch, IterationPlan, SolverContext, TrainingSet, make_solver
from ptyopt.solvers.checks import check_config, stage_path
from ptyopt.solvers.scan_search import CoordinatedAffineSearch


class Interrupted(PtyoptError):
    """The user stopped the run (Ctrl-C); the last good state was saved."""


@dataclass
class LoopState:
    iteration: int = 0  # last completed iteration
    lr_multiplier: float = 1.0
    history: dict[str, list[float]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    stopped_at: int | None = None  # a stopping rule ended the run after this iteration (solver.stop_when) ...
    stop_reason: str | None = None  # ... for this reason


IterationCallback = Callable[["Engine", int], None]


def split_validation(n_positions: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out indices; the held-out ones (a seeded random fraction) are never used for updates."""
    if fraction == 0:
        return np.arange(n_positions), np.arange(0)
    # stream 7 of the seed: apart from the batch order's (seed, iteration >= 0) streams, so that the held-out
    # set is the same whatever the iteration count, and changing it would silently change every result
    held = np.sort(np.random.default_rng([seed, 7]).choice(n_positions, int(round(fraction * n_positions)),
                                                           replace=False))
    return np.setdiff1d(np.arange(n_positions), held), held


def scan_mask(problem: Problem) -> torch.Tensor:
    """(Yo, Xo) bool: the bounding box of the probe centres widened by a quarter window, where the object is
    constrained by data (constraint statistics are taken there, not over the untouched canvas edge)."""
    geometry = problem.geometry
    centres = geometry.nominal_centres_px
    # a quarter window: where the probe still carries most of its intensity; only where statistics are taken,
    # not what is constrained, so it is a fixed part of each constraint's definition rather than a setting
    pad = geometry.window_px[0] / 4
    low = np.maximum(np.floor(centres.min(axis=0) - pad).astype(int), 0)
    high = np.ceil(centres.max(axis=0) + pad).astype(int) + 1
    mask = torch.zeros(geometry.canvas_px, dtype=torch.bool, device=problem.device)
    mask[low[0] : high[0], low[1] : high[1]] = True
    return mask


class Engine:
    """Runs a Problem; ``callbacks`` are called after every completed iteration as cb(engine, iteration)."""

    def __init__(self, problem: Problem, out_dir: Path, *, callbacks: list[IterationCallback] | None = None,
                 metrics_fn: Callable[[dict[str, torch.Tensor]], dict[str, float]] | None = None,
                 console: Console | None = None):
        self.problem = problem
        self.config = problem.config
        self.out_dir = Path(out_dir)
        self.callbacks = callbacks or []
        self.metrics_fn = metrics_fn
        self.console = console or Console(stderr=True)
        self.notes = check_config(self.config)  # what a solver would refuse fails here, before any work
        for note in self.notes:
            self.console.print(f"note: {note}")
        self.state = {key: problem.initial_state[key].clone() for key in STATE_KEYS}
        self.losses = build_losses(self.config.loss)
        self.constraints = build_constraints(self.config.constraints)
        self.train_indices, self.validation_indices = split_validation(
            len(problem.geometry.nominal_centres_px), self.config.solver.validation_fraction, self.config.seed)
        self.sampler = GroupSampler(problem.geometry.nominal_centres_px[self.train_indices],
                                    self.config.solver.batch_size, self.config.solver.grouping, self.config.seed)
        self.lr_schedules = {
            name: as_schedule(update.lr)
            for name, update in self.config.optimize.updates().items()
            if update.start_iter is not None
        }
        self.adaptation = Adaptation(problem, self.losses, self.train_indices)
        search = self.config.solver.scan_search
        self.scan_search = None if search is None else CoordinatedAffineSearch(search, problem.model)
        self.stages = self.config.solver.stages
        self.stage = 0
        self.solver = self._make_stage_solver(0)
        self.loop = LoopState()
        self.meas = self._meas_on_device()
        self.training = TrainingSet(np.sort(self.train_indices), self.fetch, problem.device)
        dataset = problem.dataset
        self.context_base = dict(
            dx_ang=problem.geometry.dx_ang, wavelength_ang=problem.geometry.wavelength_ang,
            conv_angle_mrad=dataset.conv_angle_mrad, probe_power=problem.probe_power,
            scan_shape=dataset.scan_shape, scan_mask=scan_mask(problem), scan_model=problem.model.scan,
        )

    # ---- set-up -------------------------------------------------------------------------------------------

    def _meas_on_device(self) -> torch.Tensor | None:
        """All patterns on the device when nothing is applied on the fly; else None (fetched per batch)."""
        if self.problem.preprocessor.has_on_the_fly:
            return None
        meas = np.asarray(self.problem.dataset.meas, dtype=np.float32)
        return torch.as_tensor(meas, device=self.problem.device).to(self.problem.real_dtype)

    def fetch(self, indices: np.ndarray, index_tensor: torch.Tensor) -> torch.Tensor:
        if self.meas is not None:
            return self.meas[index_tensor]
        return self.problem.patterns(indices)

    # ---- solver stages --------------------------------------------------------------------------------------

    def _make_stage_solver(self, index: int):
        stage = self.stages[index]
        context = SolverContext.of(self.problem, self.state, self.losses, self.config.solver.stage_window(index))
        return make_solver(stage.name, stage.options, context, stage.lr_scheduler, where=stage_path(index))

    def _enter_stage(self, index: int, iteration: int | None = None) -> None:
        """Make stage ``index``'s solver the active one (a new solver on the live state; the count continues)."""
        if index == self.stage:
            return
        count = self.solver.forward_evaluations
        for tensor in self.state.values():  # a clean slate: no gradients or grad flags left by the last solver
            tensor.grad = None
            tensor.requires_grad_(False)
        self.solver = self._make_stage_solver(index)
        self.solver.forward_evaluations = count
        if iteration is not None:
            self.console.print(f"iteration {iteration}: solver stage {index} ({self.stages[index].name}) replaces "
                               f"stage {self.stage} ({self.stages[self.stage].name})")
        self.stage = index

    # ---- one iteration --------------------------------------------------------------------------------------

    def _iterate(self, iteration: int) -> dict[str, float]:
        scheduled = {term.name: term.weight.value(iteration) for term in self.losses}
        weights = self.adaptation.weights(iteration, scheduled)
        plan = IterationPlan(
            iteration=iteration,
            active={name: update.active(iteration) for name, update in self.config.optimize.updates().items()},
            learning_rates={name: schedule.value(iteration) * self.loop.lr_multiplier
                            for name, schedule in self.lr_schedules.items()},
            lr_multiplier=self.loop.lr_multiplier, weights=weights)
        self.solver.start_iteration(plan)
        rates = {f"lr_{name}": rate for name, rate in self.solver.learning_rates().items()}
        if self.solver.kind == "full_batch":
            reported = self.solver.run_iteration(self.training)
            means = {term.name: float(reported[term.name]) for term in self.losses}
        else:
            means = self._mini_batches(iteration)
            self.solver.end_iteration()
        if self.scan_search is not None and plan.active["scan_affine"] and self.scan_search.active(iteration):
            before = self.scan_search.evaluations
            with torch.no_grad():
                self.scan_search.run(self.state, self.training.chunks(self.config.solver.batch_size,
                                                                      self.scan_search.subset(self.training.indices)))
            self.solver.forward_evaluations += self.scan_search.evaluations - before
        self.problem.model.store_object(self.state)  # a DIP object's pixels: the network's output, for what follows
        refined = frozenset(name for name, on in plan.active.items() if on)
        ctx = ConstraintContext(iteration=iteration, refined=refined, **self.context_base)
        with torch.no_grad():
            apply_constraints(self.constraints, self.state, ctx)
        self.adaptation.end_iteration(iteration, self.state, means, scheduled)
        means["total"] = sum(weights[name] * means[name] for name in weights)
        means.update({f"weight_{name}": w for name, w in weights.items()})
        return {**means, **rates}

    def _mini_batches(self, iteration: int) -> dict[str, float]:
        """Every engine group of the iteration through the mini-batch solver; the loss terms' batch means."""
        sums = {term.name: torch.zeros((), dtype=torch.float64, device=self.problem.device) for term in self.losses}
        accumulate = self.config.solver.grad_accumulation
        groups = [self.train_indices[group] for group in self.sampler.groups(iteration)]
        for i, indices in enumerate(groups):
            index_tensor = torch.tensor(indices, device=self.problem.device)  # groups are read-only arrays
            batch = Batch(indices, index_tensor, self.fetch(indices, index_tensor))
            step = (i + 1) % accumulate == 0 or i + 1 == len(groups)
            for name, value in self.solver.update(batch, step).items():
                sums[name] += value.double()
        return {name: float(value) / len(groups) for name, value in sums.items()}

    def validation_losses(self) -> dict[str, float]:
        """Data terms on the held-out patterns (no gradients), averaged over batches of the solver's size."""
        sums: dict[str, float] = {}
        size = self.config.solver.batch_size
        with torch.no_grad():
            chunks = [self.validation_indices[i : i + size] for i in range(0, len(self.validation_indices), size)]
            data_terms = [term for term in self.losses if term.is_data_term]
            for indices in chunks:
                index_tensor = torch.tensor(indices, device=self.problem.device)
                out = self.problem.model(self.state, index_tensor)
                for name, value in loss_values(data_terms, out, self.fetch(indices, index_tensor)).items():
                    sums[name] = sums.get(name, 0.0) + float(value) / len(chunks)
        return sums

    def _finite(self, losses: dict[str, float]) -> bool:
        return math.isfinite(losses["total"]) and all(bool(torch.isfinite(t).all()) for t in self.state.values())

    # ---- snapshots, checkpoints ---------------------------------------------------------------------------

    def _snapshot(self) -> dict:
        return {
            "state": {k: v.detach().clone() for k, v in self.state.items()},
            "solver": self.solver.snapshot(),
            "stage": self.stage,
            "adaptation": self.adaptation.state_dict(),
        }

    def _restore(self, snapshot: dict) -> None:
        with torch.no_grad():
            for key, value in snapshot["state"].items():
                self.state[key].copy_(value)
        self._enter_stage(int(snapshot.get("stage", 0)))  # a rollback or resume may cross a switch
        self.solver.load_state_dict(copy.deepcopy(snapshot["solver"]))
        self.adaptation.load_state_dict(snapshot.get("adaptation"))

    def checkpoint_payload(self, snapshot: dict) -> dict:
        return {
            **snapshot,
            "loop": self.loop.__dict__.copy(),
            "config": self.config.model_dump(mode="json", exclude={"solver": {"iterations"}, "output": True,
                                                                   "device": True, "compute": True}),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self, snapshot: dict) -> Path:
        return save_checkpoint(self.out_dir / CHECKPOINT_NAME, self.checkpoint_payload(snapshot))

    def resume(self) -> int:
        """Continue from OUT/checkpoint.pt; returns the last completed iteration."""
        payload = load_checkpoint(self.out_dir / CHECKPOINT_NAME, self.problem.device)
        mine = self.checkpoint_payload({})["config"]
        if payload["config"] != mine:
            raise ConfigError(
                f"the checkpoint in {self.out_dir} was made with a different configuration; "
                "use another --out folder or the same config (only solver.iterations, output, device and compute "
                "may change)"
            )
        self._restore(payload)
        self.loop = LoopState(**payload["loop"])
        torch.set_rng_state(payload["torch_rng"])
        return self.loop.iteration

    # ---- the loop -----------------------------------------------------------------------------------------

    def run(self, *, show_progress: bool = True) -> LoopState:
        total = self.config.solver.iterations
        good = self._snapshot()
        retries = 0
        start_iteration = self.loop.iteration + 1
        if len(self.stages) > 1:
            ends = [stage.start_iter - 1 for stage in self.stages[1:]] + [total]
            plan = ", ".join(f"{i}: {stage.name} " + (f"(iterations {stage.start_iter}-{end})"
                                                       if stage.start_iter <= total else "(not reached)")
                             for i, (stage, end) in enumerate(zip(self.stages, ends, strict=True)))
            self.console.print(f"solver stages {plan}; iteration {start_iteration} runs stage "
                               f"{self.config.solver.stage_at(start_iteration)}")
        if self.loop.stopped_at is not None:
            self.console.print(f"the run stopped after iteration {self.loop.stopped_at} ({self.loop.stop_reason}); "
                               "nothing to continue")
            return self.loop
        try:
            with progress_bar(disable=not show_progress) as bar:
                task = bar.add_task("reconstruct", total=total, completed=self.loop.iteration)
                iteration = start_iteration
                while iteration <= total:
                    t0 = time.perf_counter()
                    self._enter_stage(self.config.solver.stage_at(iteration), iteration)
                    losses = self._iterate(iteration)
                    if not self._finite(losses):
                        retries += 1
                        self._restore(good)
                        self.loop.lr_multiplier *= self.config.solver.nan_lr_factor
                        self.console.print(
                            f"[yellow]iteration {iteration}: non-finite loss or state; rolled back to the last good "
                            f"state and scaled the learning rates (x{self.loop.lr_multiplier:g})[/]")
                        if retries > self.config.solver.nan_retries:
                            raise PtyoptError(f"the reconstruction diverged at iteration {iteration} even after "
                                              f"{self.config.solver.nan_retries} rollbacks with smaller learning "
                                              "rates; lower them (or raise solver.nan_retries)")
                        continue
                    retries = 0
                    self.loop.elapsed_s += time.perf_counter() - t0
                    validation = self._record(iteration, losses)
                    self.loop.iteration = iteration
                    reason = self.adaptation.should_stop(iteration, self.state, validation)
                    if reason:
                        self.loop.stopped_at, self.loop.stop_reason = iteration, reason
                    good = self._snapshot()
                    if iteration % self.config.output.checkpoint_every == 0 or iteration == total or reason:
                        self.save_checkpoint(good)
                    terms = "  ".join(f"{term.name} {losses[term.name]:.3g}" for term in self.losses)
                    bar.update(task, completed=iteration, description=f"it {iteration}  "
                               f"{self.stages[self.stage].name}  {terms}  "
                               f"{(time.perf_counter() - t0):.2f} s/it")
                    for callback in self.callbacks:
                        callback(self, iteration)
                    if reason:
                        self.console.print(f"stopped after iteration {iteration} of {total}: {reason}")
                        break
                    iteration += 1
        except KeyboardInterrupt:
            self._restore(good)
            self.save_checkpoint(good)
            raise Interrupted(
                f"stopped by the user after iteration {self.loop.iteration}; the checkpoint in {self.out_dir} "
                "continues the run with --resume"
            ) from None
        return self.loop

    def _record(self, iteration: int, losses: dict[str, float]) -> float | None:
        """One history row. Every iteration: iteration, wall_time_s, forward_evaluations, solver_stage,
        lr_multiplier, each loss term, total, weight_<term> and lr_<tensor> for each tensor with a start_iter
        (``Solver.learning_rates``: 0 while frozen, NaN under a solver that picks its own steps); every
        output.metrics_every iterations metric_* (with metric_iteration) and validation_* (with
        validation_iteration)."""
        history = self.loop.history
        row = {"iteration": float(iteration), "wall_time_s": self.loop.elapsed_s,
               "forward_evaluations": float(self.solver.forward_evaluations), "solver_stage": float(self.stage),
               "lr_multiplier": self.loop.lr_multiplier, **losses}
        every = self.config.output.metrics_every
        due = (every and iteration % every == 0) or iteration == self.config.solver.iterations
        validation = None
        if (due or self.adaptation.needs_validation) and len(self.validation_indices):
            values = self.validation_losses()
            validation = sum(losses[f"weight_{name}"] * value for name, value in values.items())  # as weighted now
            row.update({"validation_iteration": float(iteration),
                        **{f"validation_{k}": v for k, v in values.items()}})
        if self.metrics_fn is not None and every and iteration % every == 0:
            metrics = self.metrics_fn(self.state)
            row.update({"metric_iteration": float(iteration), "metric_wall_time_s": self.loop.elapsed_s})
            row.update({f"metric_{k}": v for k, v in metrics.items()})
        done = len(history.get("iteration", []))
        for key, value in row.items():
            # a run resumed from a checkpoint written before lr_* were logged: NaN for the earlier iterations, so
            # that every per-iteration list keeps the length of history["iteration"]
            history.setdefault(key, [math.nan] * done if key.startswith("lr_") else []).append(value)
        return validation
