"""The reconstruction configuration: one YAML file -> typed, frozen pydantic models.

Unknown keys fail with the closest valid key suggested; every default lives here, visible in the resolved
config that each run writes next to its results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from ptyopt.batching import GROUPING_MODES
from ptyopt.config_base import StrictModel
from ptyopt.data.steps import Step
from ptyopt.errors import ConfigError
from ptyopt.model.dip_config import DipConfig, check_object_parametrisation
from ptyopt.model.tensors import TENSOR_NAMES
from ptyopt.objective.losses import LossParams, parse_losses
from ptyopt.objective.schedules import ScheduleLike
from ptyopt.objective.stopping import StopCondition, ValidationPlateau
from ptyopt.objective.weighting import WeightingConfig
from ptyopt.physics.propagators import PROPAGATORS
from ptyopt.registry import did_you_mean

PropagatorName = Literal[PROPAGATORS.names()]  # the choices are the registry's
GroupingMode = Literal[GROUPING_MODES]


class DataConfig(StrictModel):
    """Where the measurements come from and how they are prepared."""

    path: Path = Field(description="dataset file (ptyopt .h5, or a foreign file read by key); relative to the config")
    key: str | None = Field(None, description="array key inside a foreign HDF5/EMD/npz/MATLAB file")
    scan_shape: tuple[int, int] | None = Field(None, description="raster (Ny, Nx) for foreign 3-D data or EMPAD")
    permute: tuple[int, ...] | None = Field(None, description="axis order giving (Ny, Nx, Ky, Kx) for foreign data")
    scan_region: tuple[tuple[int, int], tuple[int, int]] | None = Field(
        None, description="scan rows and columns [start, stop) to reconstruct, e.g. [[50, 150], [50, 150]]"
    )
    preprocess: list[Step] = Field(default_factory=list, description="ordered preprocessing steps")
    half: Literal[0, 1] | None = Field(
        None, description="keep one interleaved half of a raster scan ((iy + ix) % 2 == half), for half-dataset FRC"
    )


class ExperimentConfig(StrictModel):
    """Experiment metadata; None takes the dataset file's value (foreign files need them here)."""

    energy_kv: float | None = Field(None, gt=0, description="accelerating voltage [kV]")
    conv_angle_mrad: float | None = Field(None, gt=0, description="probe convergence semi-angle [mrad]")
    dk_inv_ang: float | None = Field(None, gt=0, description="detector pixel [1/Å] before preprocessing")
    step_ang: float | None = Field(None, gt=0, description="raster scan step [Å]")
    aberrations: dict[str, float] | None = Field(
        None, description="initial-probe aberrations, Krivanek C_nm [Å] / phi_nm [rad] or aliases (defocus, Cs)"
    )
    counts: bool | None = Field(None, description="the data are electron counts")
    detector_rotation_deg: float = Field(
        0.0, description="the detector's rotation against the scan [deg] (`ptyopt calibrate` measures it): the "
        "positions are mapped into the detector's frame and the object is reconstructed there (no resampling); "
        "evaluation maps the truth into that frame")
    detector_transpose: bool = Field(False, description="the detector's axes are swapped (after the rotation)")


class ModelConfig(StrictModel):
    """The multislice model and its initial state."""

    n_slices: int = Field(1, ge=1, description="object slices")
    slice_thickness_ang: float = Field(1.0, gt=0, description="thickness of each slice [Å]")
    probe_modes: int = Field(1, ge=1, description="mixed-state probe modes")
    probe_extra_power: float = Field(0.1, gt=0, lt=1, description="initial power fraction of probe modes 2..M")
    aperture_edge: Literal["hard", "soft"] = Field("soft", description="edge of the initial probe's aperture")
    probe_init: Literal["aperture", "truth"] = Field(
        "aperture", description="initial probe: from aperture + aberrations, or the dataset's true probe"
    )
    object_init: Literal["vacuum", "truth"] = Field("vacuum", description="initial object: vacuum or the truth")
    object_parametrisation: Literal["pixels", "dip"] = Field(
        "pixels", description="what is optimised for the object: its pixels (optimize.object_phase/object_amplitude), "
        "or the weights of a deep-image-prior network whose output the object is (model.dip, optimize.object_dip; "
        "solvers adam/torch.optim and lbfgs)")
    dip: DipConfig = Field(DipConfig(), description="the deep-image-prior network (object_parametrisation: dip)")
    positions_init: Literal["nominal", "truth"] = Field(
        "nominal", description="initial positions: the nominal scan, or the dataset's true positions"
    )
    slice_thickness_mode: Literal["global", "each"] = Field(
        "global", description="one refinable slice thickness, or one per slice"
    )
    object_modes: int = Field(1, ge=1, description="object modes (incoherent)")
    object_margin_px: int = Field(8, ge=0, description="object canvas beyond the outermost probe windows [px]")
    propagator: PropagatorName = Field("fresnel", description="free-space propagator")
    band_limit: bool = Field(False, description="2/3-Nyquist band limit on the propagators")
    propagate_last: bool = Field(
        False, description="propagate after the last slice too (changes nothing without band limit)"
    )
    scan_drift_order: int = Field(
        1, ge=0, le=4, description="degree K of the global drift polynomial sum_k d_k tau^k in acquisition time "
        "tau in [-1/2, 1/2], each power without its affine part (0: a translation only; on a raster scan a linear "
        "drift is an affine map and the affine takes it, so 2 adds what is left: curvature in time)")
    tilt_mode: Literal["global", "each"] = Field("global", description="one tilt, or one per position")
    initial_tilt_mrad: tuple[float, float] = Field((0.0, 0.0), description="initial tilt (theta_y, theta_x) [mrad]")
    detector_blur_px: float = Field(0.0, ge=0, description="Gaussian detector blur (std) applied to the model [px]")
    precision: Literal["float32", "float64"] = Field("float32", description="real precision (complex64/complex128)")


class TensorUpdate(StrictModel):
    """Learning rate and update window of one optimisable tensor; start_iter None = never updated."""

    lr: ScheduleLike = Field(description="learning rate: a number or a schedule over iterations")
    start_iter: int | None = Field(1, ge=1, description="first iteration that updates this tensor")
    end_iter: int | None = Field(None, ge=2, description="iteration from which it is frozen again (exclusive)")
    active_when: ScheduleLike | None = Field(
        None, description="optional window schedule: updates also need its value > 0 (e.g. piecewise 0/1)"
    )

    def active(self, iteration: int) -> bool:
        in_window = self.start_iter is not None and iteration >= self.start_iter and (
            self.end_iter is None or iteration < self.end_iter
        )
        return in_window and (self.active_when is None or self.active_when.value(iteration) > 0)

    def refined_within(self, start: int, end: int | None) -> bool:
        """Whether the window [start_iter, end_iter) meets iterations [start, end) (end None: no end); an
        active_when schedule is not evaluated (it may open the window anywhere inside)."""
        return self.start_iter is not None and (end is None or self.start_iter < end) and (
            self.end_iter is None or self.end_iter > start)


class OptimizeConfig(StrictModel):
    """Which tensors are optimised, how fast and when (the poster: probe@5, tilt/pos@10)."""

    object_amplitude: TensorUpdate = Field(TensorUpdate(lr=5e-4), description="object amplitude")
    object_phase: TensorUpdate = Field(TensorUpdate(lr=5e-4), description="object phase [rad]")
    object_dip: TensorUpdate = Field(TensorUpdate(lr=1e-3, start_iter=None), description="weights of the "
                                     "deep-image-prior object network (model.object_parametrisation: dip)")
    probe: TensorUpdate = Field(TensorUpdate(lr=1e-4), description="probe modes")
    positions: TensorUpdate = Field(TensorUpdate(lr=5e-4), description="position offsets [px]")
    tilts: TensorUpdate = Field(TensorUpdate(lr=1e-3, start_iter=None), description="tilts [mrad]")
    slice_thickness: TensorUpdate = Field(TensorUpdate(lr=1e-3, start_iter=None), description="slice thickness [Å]")
    occupancy: TensorUpdate = Field(TensorUpdate(lr=1e-3, start_iter=None), description="object-mode occupancy")
    scan_affine: TensorUpdate = Field(TensorUpdate(lr=1e-4, start_iter=None),
                                      description="global scan deformation M = A - I (rotation, scale, shear)")
    scan_drift: TensorUpdate = Field(TensorUpdate(lr=1e-2, start_iter=None),
                                     description="global drift polynomial in acquisition time [px]")

    def updates(self, window: tuple[int, int | None] | None = None) -> dict[str, TensorUpdate]:
        """Each optimisable tensor's update, by name, in the order of ``model.tensors.TENSORS``; with ``window``
        (iterations [start, end), e.g. a solver stage's), only the tensors refined within it."""
        updates = {name: getattr(self, name) for name in TENSOR_NAMES}
        return updates if window is None else {k: u for k, u in updates.items() if u.refined_within(*window)}

    @model_validator(mode="after")
    def _something_moves(self) -> OptimizeConfig:
        starts = [u.start_iter for u in self.updates().values() if u.start_iter is not None]
        if not starts:
            raise ConfigError("optimize: every tensor has start_iter null; nothing would be reconstructed")
        if min(starts) > 1:
            raise ConfigError("optimize: no tensor starts at iteration 1; the first iterations would do nothing")
        return self


assert tuple(OptimizeConfig.model_fields) == TENSOR_NAMES, "optimize must list model.tensors.TENSORS, in order"


class SchedulerConfig(StrictModel):
    name: str = Field(description="a torch.optim.lr_scheduler class, e.g. CosineAnnealingLR")
    options: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments")


class SolverStage(StrictModel):
    """A later solver of the run: from iteration ``start_iter`` on, ``name`` continues on the same live state."""

    start_iter: int = Field(ge=1, description="first iteration (1-based) run by this solver; > 1, increasing")
    name: str = Field(description="solver: a registered one (`ptyopt info` lists them) or a torch.optim class")
    options: dict[str, Any] = Field(default_factory=dict, description="the solver's own parameters")
    lr_scheduler: SchedulerConfig | None = Field(
        None, description="torch LR scheduler of this stage (torch optimisers only), stepped every iteration"
    )


class ScanSearchConfig(StrictModel):
    """Coarse stage of position refinement (``solvers.scan_search``): coordinated searches of the global scan
    affine, the object carried along, at iterations start_iter, start_iter + every, ... before end_iter (after
    the solver's update, before the constraints). Needs optimize.scan_affine refined at those iterations."""

    start_iter: int = Field(2, ge=1, description="first iteration with a search (after the object has formed)")
    end_iter: int | None = Field(None, ge=2, description="iteration from which no search runs (exclusive)")
    every: int = Field(1, ge=1, description="iterations between searches")
    passes: int = Field(2, ge=1, description="search passes per iteration (each 10 forward passes)")
    probe_step: float = Field(0.01, gt=0, le=0.1, description="trial change h of each affine shape per pass")
    max_step: float = Field(0.02, gt=0, le=0.1, description="largest change of each affine shape per pass")
    positions_fraction: float = Field(
        1.0, gt=0, le=1, description="fraction of the training positions the misfit is summed over (a fixed, "
        "evenly spread subset: every k-th in raster order; smaller is cheaper)")


class SolverConfig(StrictModel):
    """The optimiser and the batch loop. ``name``/``options``/``lr_scheduler`` are the first solver (stage 0, from
    iteration 1); ``switch`` lists later solvers, e.g. Adam first, then L-BFGS to polish."""

    name: str = Field(
        "adam", description="solver: a registered one (adam, epie, lsqml, lm, ...; `ptyopt info` lists them) or any "
        "torch.optim class (AdamW, SGD, ...)"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the solver's own parameters")
    lr_scheduler: SchedulerConfig | None = Field(None, description="torch LR scheduler stepped every iteration")
    switch: list[SolverStage] = Field(
        default_factory=list, description="later solvers, each from its start_iter on (stages 1, 2, ...), e.g. "
        "[{start_iter: 21, name: lbfgs, options: {max_iter: 10}}]"
    )
    iterations: int = Field(200, ge=1, description="iterations (passes over all positions)")
    batch_size: int = Field(32, ge=1, description="positions per mini-batch")
    grouping: GroupingMode = Field("random", description="how batches are formed (mini-batch solvers)")
    grad_accumulation: int = Field(1, ge=1, description="mini-batches per optimiser step")
    validation_fraction: float = Field(
        0.0, ge=0, lt=0.5, description="patterns held out of every update to measure a validation loss"
    )
    nan_retries: int = Field(
        6, ge=0, description="NaN guard: rollbacks in a row (each multiplies the learning rates by nan_lr_factor) "
        "before the run stops as diverged"
    )
    nan_lr_factor: float = Field(0.5, gt=0, lt=1, description="NaN guard: learning-rate factor per rollback")
    scan_search: ScanSearchConfig | None = Field(
        None, description="coordinated searches of the global scan affine (coarse position stage); null = none")
    stop_when: list[StopCondition] = Field(
        default_factory=list, description="stopping rules without ground truth (any one ends the run before "
        "solver.iterations): [{kind: validation_plateau, patience: 3}] (needs validation_fraction > 0), "
        "[{kind: discrepancy, target: 1.0}] (the misfit reached the Poisson noise; needs counts)")

    @property
    def stages(self) -> list[SolverStage]:
        """Stage 0 (name, options, lr_scheduler from iteration 1), then the switches."""
        first = SolverStage(start_iter=1, name=self.name, options=self.options, lr_scheduler=self.lr_scheduler)
        return [first, *self.switch]

    def stage_window(self, index: int) -> tuple[int, int | None]:
        """Iterations [start, end) of stage ``index``; end None for the last (a resumed run may add iterations)."""
        stages = self.stages
        return stages[index].start_iter, stages[index + 1].start_iter if index + 1 < len(stages) else None

    def stage_at(self, iteration: int) -> int:
        """Index of the stage that runs ``iteration`` (1-based)."""
        return max(i for i, stage in enumerate(self.stages) if stage.start_iter <= iteration)

    @model_validator(mode="after")
    def _stages_resolve(self) -> SolverConfig:
        previous = 1
        for i, stage in enumerate(self.switch):
            if stage.start_iter <= previous:
                raise ConfigError(f"solver.switch[{i}].start_iter is {stage.start_iter}; each switch must start "
                                  f"after iteration {previous} (stage 0 starts at 1 and start_iter must increase)")
            previous = stage.start_iter
        if self.validation_fraction == 0 and any(isinstance(r, ValidationPlateau) for r in self.stop_when):
            raise ConfigError("solver.stop_when validation_plateau watches the held-out validation loss; set "
                              "solver.validation_fraction (e.g. 0.1) or remove the rule")
        return self  # names, options and capabilities: ptyopt.solvers.checks.check_config


class OutputConfig(StrictModel):
    dir: Path = Field(Path("ptyopt_out"), description="output folder (relative to the working directory)")
    checkpoint_every: int = Field(10, ge=1, description="iterations between checkpoints")
    metrics_every: int = Field(0, ge=0, description="iterations between truth metrics (0 = at the end only)")
    snapshot_every: int = Field(
        0, ge=0, description="iterations between snapshots: snapshots/iter_NNNN.h5 (the result schema) and "
        "iter_NNNN_phase.tif, to look at and score a run while it runs (0 = none)")
    metric_margin_ang: float = Field(2.0, ge=0, description="margin inside the scanned region for metrics [Å]")


class ComputeConfig(StrictModel):
    """How the work is laid out on the device; none of it changes the result beyond float round-off."""

    chunk_patterns: int | Literal["auto"] = Field(
        "auto", description="patterns per forward/backward pass: 'auto' splits a batch only when its estimated "
        "memory exceeds memory_fraction of the free memory; a number always splits (exact: same loss and gradient)",
    )
    memory_fraction: float = Field(
        0.7, gt=0, le=1, description="share of the free device memory (host memory on a CPU) one batch may use"
    )
    compile: bool = Field(
        False, description="torch.compile the multislice forward: on 2 CPU cores 5-10 % faster per iteration, but "
        "each (re)compilation costs ~25 s (inductor generates no code for complex tensors); see docs/performance.md",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (None: torch's default, one per core); set it when several "
        "runs share a machine, or they slow each other down badly",
    )

    @field_validator("chunk_patterns")
    @classmethod
    def _positive(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError("chunk_patterns must be >= 1 or 'auto'")
        return value


class ReconstructionConfig(StrictModel):
    """A whole reconstruction run."""

    data: DataConfig
    experiment: ExperimentConfig = Field(ExperimentConfig(), description="metadata overrides")
    model: ModelConfig = Field(ModelConfig(), description="forward model and initial state")
    optimize: OptimizeConfig = Field(OptimizeConfig(), description="learning rates and update windows")
    loss: dict[str, SerializeAsAny[LossParams]] = Field(
        default_factory=lambda: {"single": {}}, description="loss terms by name with their parameters and weights"
    )
    loss_weighting: WeightingConfig | None = Field(
        None, description="adaptive loss weights (one rule per run; null = the configured weights): {rule: "
        "gradient_balance, fraction: 0.1} | {rule: discrepancy, relax: 0.5} | {rule: uncertainty} (see "
        "ptyopt.objective.weighting)")
    constraints: dict[str, SerializeAsAny[StrictModel]] = Field(
        default_factory=dict, description="constraints by name, each with start_iter/step/end_iter (all off)"
    )
    solver: SolverConfig = Field(SolverConfig(), description="optimiser and batches")
    output: OutputConfig = Field(OutputConfig(), description="where and how often to write")
    compute: ComputeConfig = Field(ComputeConfig(), description="chunking, compilation and threads (speed only)")
    seed: int = Field(0, description="seed of the initial state and of the batch order")
    device: str = Field("cpu", description="torch device (cpu, cuda, cuda:1, ...)")

    @field_validator("loss", mode="before")
    @classmethod
    def _losses(cls, value: Any) -> Any:
        return parse_losses(value)

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraints(cls, value: Any) -> Any:
        from ptyopt.objective.constraints import parse_constraints

        return parse_constraints(value or {})

    @model_validator(mode="after")
    def _scan_model_fit_has_a_model(self) -> ReconstructionConfig:
        opt = self.optimize
        search = self.solver.scan_search
        if search is not None and not opt.scan_affine.refined_within(search.start_iter, search.end_iter):
            raise ConfigError("solver.scan_search changes the global scan affine, but optimize.scan_affine is not "
                              "refined while it runs; give optimize.scan_affine a start_iter (<= "
                              f"{search.start_iter}) or remove solver.scan_search")
        if "scan_model_fit" in self.constraints and opt.scan_affine.start_iter is None and (
                opt.scan_drift.start_iter is None):
            raise ConfigError("constraints.scan_model_fit moves the offsets into the global scan model, but neither "
                              "optimize.scan_affine nor optimize.scan_drift is refined; give one a start_iter or "
                              "remove the constraint")
        return self

    @model_validator(mode="after")
    def _object_parametrisation_fits(self) -> ReconstructionConfig:
        check_object_parametrisation(self)  # a DIP object: what it cannot be combined with
        return self


def _fields_at(model: type[StrictModel], loc: tuple) -> list[str]:
    """Valid keys of the (nested) model at a pydantic error location, for suggestions."""
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in getattr(annotation, "__args__", ()) + (annotation,) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, StrictModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def explain_validation_error(err: ValidationError, model: type[StrictModel]) -> str:
    """One readable line per problem, with 'did you mean' for unknown keys."""
    lines = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"])
        where = ".".join(str(p) for p in loc)
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key '{where}'{did_you_mean(str(loc[-1]), _fields_at(model, loc[:-1]))}")
        elif item["type"] == "missing":
            lines.append(f"missing required key '{where}'")
        else:
            message = item["msg"]
            if item["type"] == "value_error":
                message = str(item.get("ctx", {}).get("error", message))
            lines.append(f"{where or 'config'}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_config(raw: dict[str, Any], base_dir: Path | None = None) -> ReconstructionConfig:
    """Validate a config mapping; a relative data path is taken relative to base_dir."""
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a YAML mapping of sections (data, model, optimize, ...)")
    try:
        config = ReconstructionConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(explain_validation_error(err, ReconstructionConfig)) from None
    if base_dir is not None and not config.data.path.is_absolute():
        data = config.data.model_copy(update={"path": (base_dir / config.data.path).resolve()})
        config = config.model_copy(update={"data": data})
    fit_to = config.model.dip.fit_to
    if base_dir is not None and fit_to is not None and not fit_to.is_absolute():
        dip = config.model.dip.model_copy(update={"fit_to": (base_dir / fit_to).resolve()})
        config = config.model_copy(update={"model": config.model.model_copy(update={"dip": dip})})
    return config


def read_yaml(path: Path, what: str) -> Any:
    """Parsed YAML, or a ConfigError naming the file ("cannot read config x.yaml: No such file ...")."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ReconstructionConfig:
    """Read a YAML config; ``overrides`` maps dotted keys (e.g. 'solver.iterations') to values."""
    path = Path(path)
    raw = read_yaml(path, "config") or {}
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return parse_config(raw, base_dir=path.parent)


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """raw['a']['b'] = value for dotted 'a.b', creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
    node[leaf] = value


def dump_config(config: ReconstructionConfig) -> str:
    """The resolved config (every default filled) as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
