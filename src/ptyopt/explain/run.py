"""``ptyopt explain RESULT.h5``: the diagnostics of a finished (or running) reconstruction, each a figure and
numbers, written to one folder with ``explain.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptyopt.batching import evenly_spread
from ptyopt.errors import ConfigError, DataError
from ptyopt.evaluate.evaluation import json_safe, load_result, per_slice_frc
from ptyopt.explain import figures
from ptyopt.explain.gradients import gradient_shares, refined_tensors, term_gradients
from ptyopt.explain.landscape import checked_range, landscape_cut, parse_cut
from ptyopt.explain.probe_depth import column_and_gap_positions, probe_through_slices
from ptyopt.explain.residuals import position_field, position_residuals, residual_summary
from ptyopt.explain.session import open_session, weights_at
from ptyopt.io.result_file import SNAPSHOT_DIR

EXPLAIN_JSON = "explain.json"


@dataclass
class ExplainOptions:
    """cuts: parameters of the loss-landscape cuts (``landscape.CUTS``, a position as ``position_x:N``);
    cut_range: half range of every cut in its unit (None: each parameter's default); cut_points: points per cut;
    compare: a second result (the other half of the positions) for the per-slice FRC; data: the data file when it
    moved; positions: at most this many positions (evenly spread) for the gradients and the cuts; snapshots: at
    most this many of the run's snapshots for the gradient shares over the iterations."""

    cuts: list[str] = field(default_factory=lambda: ["defocus"])
    cut_range: float | None = None
    cut_points: int = 21
    compare: Path | None = None
    data: Path | None = None
    device: str = "cpu"
    positions: int = 256
    snapshots: int = 8


def snapshot_files(result_path: Path, limit: int) -> list[Path]:
    """Up to ``limit`` of the run's snapshots (evenly spread, the last one kept) beside RESULT.h5."""
    files = sorted((result_path.parent / SNAPSHOT_DIR).glob("iter_*.h5"))
    return [files[i] for i in evenly_spread(len(files), limit)] if files else []


def explain_result(result_path: Path, out_dir: Path, options: ExplainOptions) -> dict[str, Any]:
    """Every diagnostic of ``result_path`` into ``out_dir`` (figures + explain.json); returns the numbers.
    Everything that can refuse (the result, the data, the cuts, the second result) is checked before anything
    is written."""
    if options.positions < 1 or options.cut_points < 3:
        raise ConfigError("--positions must be >= 1 and --cut-points >= 3")
    session = open_session(result_path, data_path=options.data, device=options.device,
                           max_positions=options.positions)
    n_positions = session.problem.dataset.n_patterns
    cuts = [parse_cut(text, n_positions) for text in options.cuts]
    for name, _ in cuts:
        checked_range(session, name, options.cut_range, options.cut_points)
    other = load_result(options.compare) if options.compare is not None else None
    weights = weights_at(session.result, session.losses)
    tensors = refined_tensors(session)
    if not tensors:
        raise DataError("the result's config refines no tensor; there is no gradient to explain")
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    summary: dict[str, Any] = {"result": str(result_path), "weights": weights, "positions_used": len(session.indices)}

    # the probe through the slices, on a column and between columns
    on_column, gap = column_and_gap_positions(session)
    depth = probe_through_slices(session, [on_column, gap], ["on a column", "between columns"])
    summary["probe_depth"] = depth.to_dict()
    files["probe_depth"] = figures.save_probe_depth_figure(out_dir / "probe_depth.png", depth)

    # each term's share of each tensor's gradient, at the snapshots and the result
    iterations, shares = [], []
    for snapshot in snapshot_files(result_path, options.snapshots):
        snap = load_result(snapshot)
        iterations.append(int(snap.attrs.get("iteration", snapshot.stem.split("_")[-1])))
        shares.append(gradient_shares(term_gradients(session, session.state_of(snap),
                                                     weights_at(snap, session.losses), tensors)))
    last = session.result.history.get("iteration")
    final_iteration = int(last[-1]) if last is not None and len(last) else 0
    if not iterations or iterations[-1] != final_iteration:
        iterations.append(final_iteration)
        shares.append(gradient_shares(term_gradients(session, session.state, weights, tensors)))
    summary["gradient_shares"] = {"iterations": iterations, "values": shares}
    files["gradient_shares"] = figures.save_gradient_share_figure(out_dir / "gradient_shares.png", iterations, shares)

    # loss-landscape cuts
    summary["cuts"] = []
    for name, index in cuts:
        cut = landscape_cut(session, name, weights, index=index, half_range=options.cut_range,
                            points=options.cut_points)
        summary["cuts"].append(cut.to_dict())
        label = name if index is None else f"{name}_{index}"
        files[f"landscape_{label}"] = figures.save_landscape_figure(out_dir / f"landscape_{label}.png", cut)

    # the position-correction field and the data residual per position
    field_ = position_field(session)
    summary["position_field"] = {k: field_[k] for k in ("rms_ang", "local_rms_ang", "max_ang", "mean_ang")}
    nominal = session.result.nominal_positions_ang
    files["position_field"] = figures.save_position_field_figure(out_dir / "position_field.png", nominal, field_)
    residuals = position_residuals(session)
    summary["residuals"] = residual_summary(residuals)
    files["residuals"] = figures.save_residual_figure(out_dir / "residuals.png", residuals,
                                                      session.problem.dataset.scan_shape, nominal)

    # per-slice FRC between two half-dataset reconstructions
    if other is not None:
        per_slice = per_slice_frc(session.result, other, margin_ang=session.problem.config.output.metric_margin_ang)
        if per_slice is None:
            summary["notes"] = ["per-slice FRC skipped: the two results have different numbers of slices"]
        else:
            summary["slice_frc"] = [{"slice": e["slice"], "frc_resolution_ang": e["frc_resolution_ang"]}
                                    for e in per_slice]
            files["slice_frc"] = figures.save_slice_frc_figure(out_dir / "slice_frc.png", per_slice)
    summary["files"] = {label: str(path) for label, path in files.items()}
    (out_dir / EXPLAIN_JSON).write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False))
    return summary
