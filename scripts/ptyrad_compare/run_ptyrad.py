"""Run PtyRAD 1.0 on the CPU for the paired timing comparison (called by run_ptyrad.sh).

    python run_ptyrad.py --niter N --threads T [--params ptyrad_params.yaml] [--out /tmp/ptyrad_out] [--seed 0]

Reads the params file, makes the measurement path absolute (relative paths are taken from the ptyopt
repository root), sets NITER, SAVE_ITERS = NITER (one model_iterNNNN.hdf5, written after the last timed
iteration), output_dir and the seed, writes the resolved params to OUT/params_used.yaml and runs PtyRAD
through its Python API (load_params -> PtyRADSolver(...).run()) on torch's CPU device with T threads.
Needs the torchvision stand-in of this folder on PYTHONPATH (run_ptyrad.sh sets it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--niter", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--params", default=str(HERE / "ptyrad_params.yaml"))
    ap.add_argument("--out", default="/tmp/ptyrad_out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    import yaml

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:  # already set (only possible before any parallel work)
        pass

    with open(args.params) as f:
        params = yaml.safe_load(f)
    meas = params["init_params"]["meas_params"]
    path = Path(meas["path"])
    if not path.is_absolute():
        path = (REPO / path).resolve()
    meas["path"] = str(path)
    recon = params["recon_params"]
    recon["NITER"] = args.niter
    recon["SAVE_ITERS"] = args.niter
    recon["output_dir"] = args.out
    params["init_params"]["random_seed"] = args.seed

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    used = out / "params_used.yaml"
    with open(used, "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)

    from ptyrad.params import load_params
    from ptyrad.runtime.device import set_gpu_device
    from ptyrad.runtime.logging import LoggingManager
    from ptyrad.solver import PtyRADSolver

    # PtyRAD's own log (ptyrad_log.txt, with the per-iteration "Iter: N, ... in X sec" lines) goes to the
    # reconstruction folder, as with `ptyrad run`.
    LoggingManager(log_file="ptyrad_log.txt", log_dir="auto", prefix_time="datetime", append_to_file=True,
                   show_timestamp=True, verbosity="INFO")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
    validated = load_params(str(used), validate=True)
    device = set_gpu_device("cpu")
    PtyRADSolver(validated, device=device, seed=args.seed).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
