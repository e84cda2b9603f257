"""What the run would refuse about its solvers, checked once at config time (``ptyopt config validate``, the start
of every run and every study run): names, options, LR schedulers, the declared ``Solver.capabilities`` against
the optimize and model sections, and each solver's own cross-checks (``Solver.check_config``). Also the notes
on keys a chosen solver does not use, so that nothing is silently accepted as if it were used."""

from __future__ import annotations

from collections.abc import Mapping

from ptyopt.config import OptimizeConfig, ReconstructionConfig, TensorUpdate
from ptyopt.errors import ConfigError
from ptyopt.solvers.base import Capabilities, solver_class, solver_params


def stage_path(index: int) -> str:
    """The config path of solver stage ``index`` (0: solver, i: solver.switch[i - 1])."""
    return "solver" if index == 0 else f"solver.switch[{index - 1}]"


def check_capabilities(name: str, capabilities: Capabilities, updates: Mapping[str, TensorUpdate], tilt_mode: str,
                       grad_accumulation: int) -> None:
    """ConfigError when the optimize section (``updates``), model.tilt_mode or solver.grad_accumulation ask solver
    ``name`` for something it cannot do."""
    refined = [tensor for tensor, update in updates.items() if update.start_iter is not None]
    unsupported = [tensor for tensor in refined if tensor not in capabilities.updates]
    if unsupported:
        can = ", ".join(t for t in OptimizeConfig.model_fields if t in capabilities.updates)
        raise ConfigError(f"solver '{name}' refines {can} only; set optimize.{unsupported[0]}.start_iter: null "
                          "or use solver.name: adam")
    if "tilts" in refined and tilt_mode not in capabilities.tilt_modes:
        modes = " or ".join(sorted(capabilities.tilt_modes))
        raise ConfigError(f"solver '{name}' refines tilts only with model.tilt_mode: {modes}; set model.tilt_mode: "
                          f"{sorted(capabilities.tilt_modes)[0]} or optimize.tilts.start_iter: null")
    if grad_accumulation != 1 and not capabilities.grad_accumulation:
        raise ConfigError(f"solver '{name}' updates after every batch; set solver.grad_accumulation: 1 "
                          "(use solver.batch_size for larger groups)")


def unused_keys(name: str, index: int, config: ReconstructionConfig) -> list[str]:
    """Notes on the keys solver ``name`` (stage ``index``) does not use although the config sets them."""
    cls = solver_class(name)
    notes = []
    if not cls.capabilities.learning_rates:
        defaults = {tensor: info.default.lr for tensor, info in OptimizeConfig.model_fields.items()}
        changed = [f"optimize.{tensor}.lr" for tensor, update in config.optimize.updates().items()
                   if update.start_iter is not None and update.lr != defaults[tensor]]
        if changed:
            verb = "is" if len(changed) == 1 else "are"
            notes.append(f"{stage_path(index)} '{name}' chooses its own step sizes: {', '.join(changed)} {verb} "
                         "not used (the update windows are; a NaN rollback still scales the steps)")
    if cls.kind == "full_batch":
        solver = config.solver
        if solver.grouping != "random" or solver.grad_accumulation != 1:
            notes.append(f"{stage_path(index)} '{name}' works on fixed chunks of the sorted positions: "
                         "solver.grouping and solver.grad_accumulation are not used by it")
    return notes


def check_config(config: ReconstructionConfig) -> list[str]:
    """Raise ConfigError for the first solver problem the run would meet; return the notes on unused keys."""
    import ptyopt.solvers  # noqa: F401  (registers every solver)

    notes = []
    for index, stage in enumerate(config.solver.stages):
        params = solver_params(stage.name, stage.options, stage.lr_scheduler, stage_path(index))
        cls = solver_class(stage.name)
        try:
            check_capabilities(stage.name, cls.capabilities, config.optimize.updates(), config.model.tilt_mode,
                               config.solver.grad_accumulation)
            cls.check_config(params, config)
        except ConfigError as err:
            if index == 0:
                raise
            raise ConfigError(f"{stage_path(index)} ({stage.name}): {err}") from None
        notes += unused_keys(stage.name, index, config)
    return notes
