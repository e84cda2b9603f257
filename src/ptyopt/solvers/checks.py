"""What the run would refuse about its solvers, checked once at config time (``ptyopt config validate``, the start
of every run and every study run): names, options, LR schedulers, the declared ``Solver.capabilities`` against
the optimize and model sections, and each solver's own cross-checks (``Solver.check_config``). Also the notes
on keys a chosen solver does not use, so that nothing is silently accepted as if it were used."""

from __future__ import annotations

from ptyopt.config import OptimizeConfig, ReconstructionConfig, TensorUpdate
from ptyopt.errors import ConfigError
from ptyopt.model.dip_config import unused_dip_keys
from ptyopt.solvers.base import check_capabilities, solver_class, solver_params


def stage_path(index: int) -> str:
    """The config path of solver stage ``index`` (0: solver, i: solver.switch[i - 1])."""
    return "solver" if index == 0 else f"solver.switch[{index - 1}]"


def _lr_set(tensor: str, update: TensorUpdate) -> bool:
    """Whether the config gives ``tensor`` a learning rate other than its default."""
    return update.lr != OptimizeConfig.model_fields[tensor].default.lr


def unused_keys(name: str, index: int, config: ReconstructionConfig) -> list[str]:
    """Notes on the keys solver ``name`` (stage ``index``) does not use although the config sets them."""
    cls = solver_class(name)
    notes = []
    if not cls.capabilities.learning_rates:
        changed = [f"optimize.{tensor}.lr" for tensor, update in
                   config.optimize.updates(config.solver.stage_window(index)).items() if _lr_set(tensor, update)]
        if changed:
            verb = "is" if len(changed) == 1 else "are"
            notes.append(f"{stage_path(index)} '{name}' chooses its own step sizes: {', '.join(changed)} {verb} "
                         "not used (the update windows are)")
    if not cls.capabilities.loss_terms and config.loss_weighting is not None:
        notes.append(f"{stage_path(index)} '{name}' fits its own likelihood: loss_weighting changes only the "
                     "reported loss, not its updates (use adam, a torch.optim class or lbfgs)")
    if cls.kind == "full_batch":
        solver = config.solver
        if solver.grouping != "random" or solver.grad_accumulation != 1:
            notes.append(f"{stage_path(index)} '{name}' works on fixed chunks of the sorted positions: "
                         "solver.grouping and solver.grad_accumulation are not used by it")
    return notes


def switched_off(config: ReconstructionConfig) -> list[str]:
    """Notes on tensors whose learning rate is set although their update window is closed (start_iter null)."""
    return [f"optimize.{tensor}.lr is set but optimize.{tensor}.start_iter is null: {tensor} is not refined "
            f"(give start_iter to refine it)" for tensor, update in config.optimize.updates().items()
            if update.start_iter is None and _lr_set(tensor, update)]


def check_config(config: ReconstructionConfig) -> list[str]:
    """Raise ConfigError for the first solver problem the run would meet; return the notes on unused keys."""
    notes = []
    for index, stage in enumerate(config.solver.stages):
        params = solver_params(stage.name, stage.options, stage.lr_scheduler, stage_path(index))
        cls = solver_class(stage.name)
        try:
            check_capabilities(stage.name, cls.capabilities, config.optimize.updates(config.solver.stage_window(index)),
                               config.model.tilt_mode, config.solver.grad_accumulation,
                               config.model.object_parametrisation)
            cls.check_config(params, config)
        except ConfigError as err:
            if index == 0:
                raise
            raise ConfigError(f"{stage_path(index)} ({stage.name}): {err}") from None
        notes += unused_keys(stage.name, index, config)
    return notes + switched_off(config) + unused_dip_keys(config.model)
