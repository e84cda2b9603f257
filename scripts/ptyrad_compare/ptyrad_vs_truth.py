"""Score a PtyRAD reconstruction against the dataset's ground truth with ptyopt's own metrics.

    .venv/bin/python scripts/ptyrad_compare/ptyrad_vs_truth.py PTYRAD_OUTPUT [--data DATASET.h5] [--json FILE]

PTYRAD_OUTPUT: a PtyRAD model_iterNNNN.hdf5 or a folder above it (the newest one is used). The PtyRAD
object, probe and positions are put into a ptyopt ReconstructionResult (PtyRAD's probe window of K px has
its top-left corner at crop_pos + probe_pos_shifts in object pixels, so the probe centre sits at that + K//2;
the origin of object pixel (0, 0) in the file's position frame follows from the file's nominal positions),
and ``ptyopt.evaluate.evaluate_result`` aligns the slice-summed phase to /truth/phase_slices summed over the
scanned region minus a 2 Å margin (sub-pixel shift and phase offset) and prints pearson_r, nrmse, ...
Run with the ptyopt venv (it needs ptyopt and h5py, not PtyRAD).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "examples" / "studies" / "data" / "sto_small_32.h5"


def newest_model(target: Path) -> Path:
    if target.is_file():
        return target
    models = sorted(target.rglob("model*_iter*.hdf5"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise FileNotFoundError(f"no PtyRAD model_iter*.hdf5 below {target}")
    return models[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--margin-ang", type=float, default=2.0)
    args = ap.parse_args(argv)

    from ptyopt.data import read_dataset
    from ptyopt.evaluate.evaluation import evaluate_result
    from ptyopt.io.result_file import ReconstructionResult

    src = newest_model(args.output)
    with h5py.File(src, "r") as f:
        t = f["optimizable_tensors"]
        obja = np.asarray(t["obja"][()], dtype=np.float32)
        objp = np.asarray(t["objp"][()], dtype=np.float32)
        probe = np.asarray(t["probe"][()])
        shifts = np.asarray(t["probe_pos_shifts"][()], dtype=np.float64)
        tilts = np.asarray(t["obj_tilts"][()], dtype=np.float32).reshape(-1, 2)
        dz = float(np.asarray(t["slice_thickness"][()]))
        a = f["model_attributes"]
        crop_pos = np.asarray(a["crop_pos"][()], dtype=np.float64)
        dx = float(np.asarray(a["dx"][()]))
        occupancy = np.asarray(a["omode_occu"][()], dtype=np.float32)
        niter = int(np.asarray(f["niter"][()]))
    window = probe.shape[-1]
    centres_px = crop_pos + shifts + window // 2           # (N, 2) (y, x) probe centres in object pixels

    dataset = read_dataset(args.data)
    nominal = np.asarray(dataset.positions_ang, dtype=np.float64)
    origin = (nominal - centres_px * dx).mean(axis=0)      # PtyRAD's 0.15 px initial jitter averages out
    positions = origin + centres_px * dx

    result = ReconstructionResult(
        object_phase=objp, object_amplitude=obja, occupancy=occupancy, probe=probe,
        positions_ang=positions, nominal_positions_ang=nominal, tilts_mrad=tilts,
        slice_thickness_ang=np.array([dz], dtype=np.float32), dx_ang=dx,
        origin_ang=(float(origin[0]), float(origin[1])),
    )
    metrics = evaluate_result(result, dataset, margin_ang=args.margin_ang, data_r_factor=False)
    keep = {k: metrics.get(k) for k in ("pearson_r", "nrmse", "rmse_rad", "ssim", "shift_px", "offset_rad",
                                        "n_pixels", "position_rms_error_ang", "nominal_rms_error_ang")}
    keep.update({"source": str(src), "iteration": niter, "dx_ang": dx, "origin_ang": origin.tolist()})
    text = json.dumps(keep, indent=1, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
