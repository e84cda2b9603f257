"""The ``ptyopt`` command. User errors (PtyoptError) print a message and exit with code 2, never a traceback."""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ptyopt.errors import ConfigError, PtyoptError
from ptyopt.recipes import DEFAULT_RECIPE, RECIPE_HELP

app = typer.Typer(
    name="ptyopt",
    help="Multislice electron ptychography by automatic differentiation: simulate, reconstruct, evaluate, study.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


config_app = typer.Typer(help="Configuration files: a commented template, validation.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def command(*args: Any, target: typer.Typer = app, **kwargs: Any) -> Callable:
    """Register a CLI command whose PtyoptErrors become a one-line message and exit code 2."""

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except PtyoptError as err:
                err_console.print(f"[bold red]error:[/] {err}", highlight=False)
                raise typer.Exit(2) from None

        return target.command(*args, **kwargs)(wrapper)

    return decorator


def _parse_range(text: str | None, name: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"{name} must look like START:STOP (e.g. 50:150), got '{text}'") from None
    return start, stop


def _parse_numbers(text: str | None, name: str, kind: type = int) -> tuple | None:
    """'2,3,0,1' -> (2, 3, 0, 1) with a clear error for anything else."""
    if text is None:
        return None
    try:
        return tuple(kind(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        example = "2,3,0,1" if kind is int else "1.5,-2"
        raise ConfigError(f"{name} must be comma-separated numbers (e.g. {example}), got '{text}'") from None


@command()
def info() -> None:
    """Print versions of ptyopt and its main dependencies, and the compute devices torch can use."""
    import importlib.metadata as md

    import torch

    table = Table(title="ptyopt environment", show_header=False)
    table.add_row("python", platform.python_version())
    for package in ("ptyopt", "torch", "numpy", "scipy", "h5py", "pydantic", "abtem", "ase"):
        try:
            table.add_row(package, md.version(package))
        except md.PackageNotFoundError:
            table.add_row(package, "[dim]not installed[/]")
    table.add_row("cpu", f"{platform.machine()}, torch threads {torch.get_num_threads()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            table.add_row(f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        table.add_row("cuda", "[dim]not available[/]")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        table.add_row("mps", "available")
    from ptyopt.objective.constraints import CONSTRAINTS
    from ptyopt.objective.losses import LOSSES
    from ptyopt.physics import PROPAGATORS
    from ptyopt.solvers import SOLVERS
    from ptyopt.solvers.base import torch_optimizer_names

    for kind, names in (("solvers", [*SOLVERS.names(), "or a torch.optim class:", *torch_optimizer_names()]),
                        ("loss terms", LOSSES.names()), ("constraints", CONSTRAINTS.names()),
                        ("propagators", PROPAGATORS.names())):
        table.add_row(kind, " ".join(names))
    console.print(table)


@command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("demo_out"),
    iterations: Annotated[int | None, typer.Option(help="iterations (default: the demo config's)")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
    overwrite: Annotated[bool, typer.Option(help="replace an earlier demo run in the output folder")] = False,
    recipe: Annotated[str, typer.Option(help=f"named recipe: {RECIPE_HELP}")] = DEFAULT_RECIPE,
) -> None:
    """Reconstruct the shipped sto-demo dataset (abTEM SrTiO3) with a recipe and compare the result with its truth."""
    from ptyopt.demo import run_demo

    run, r = run_demo(out, device=device, iterations=iterations, overwrite=overwrite, recipe=recipe)
    _report(run)
    console.print(f"forward model on the truth vs the data: R-factor {r:.4f}")


@command()
def convert(
    source: Annotated[Path, typer.Argument(
        help="foreign data: .npy .npz .h5 .emd .mat .tif .raw, Merlin .mib, Dectris *_master.h5, .zarr")],
    out: Annotated[Path, typer.Option(help="ptyopt dataset file to write (.h5)")],
    energy_kv: Annotated[float | None, typer.Option(help="accelerating voltage [kV] (default: the file's)")] = None,
    conv_angle_mrad: Annotated[float | None, typer.Option(
        help="probe convergence semi-angle [mrad] (default: the file's)")] = None,
    dk_inv_ang: Annotated[float | None, typer.Option(
        help="detector pixel in reciprocal space [1/Å] (default: the file's; `ptyopt calibrate` measures it)")] = None,
    step_ang: Annotated[float | None, typer.Option(help="raster scan step [Å] (default: the file's)")] = None,
    scan_shape: Annotated[str | None, typer.Option(help="scan Ny,Nx (needed for 3-D input and EMPAD)")] = None,
    key: Annotated[str | None, typer.Option(help="dataset key inside HDF5/EMD/npz/MATLAB files")] = None,
    permute: Annotated[str | None, typer.Option(help="axis order giving (Ny,Nx,Ky,Kx), e.g. 2,3,0,1")] = None,
    scan_crop_y: Annotated[str | None, typer.Option(help="keep scan rows START:STOP")] = None,
    scan_crop_x: Annotated[str | None, typer.Option(help="keep scan columns START:STOP")] = None,
    defocus_ang: Annotated[float, typer.Option(help="nominal defocus [Å] (= -C10, positive = underfocus)")] = 0.0,
    aberrations: Annotated[str | None, typer.Option(help='more aberrations as JSON, e.g. \'{"Cs": 1e4}\'')] = None,
    counts: Annotated[bool, typer.Option(help="the data are electron counts")] = False,
    dose_e_per_ang2: Annotated[float | None, typer.Option(help="electron dose [e/Å²]")] = None,
    preprocess: Annotated[Path | None, typer.Option(help="YAML list of preprocessing steps to precompute")] = None,
) -> None:
    """Convert foreign 4D-STEM data into a ptyopt dataset file (optionally cropped and preprocessed)."""
    import yaml
    from pydantic import TypeAdapter, ValidationError

    from ptyopt.data import Preprocessor, Step, write_dataset
    from ptyopt.data.foreign import dataset_from_foreign_file
    from ptyopt.data.readers import read_metadata

    shape = _parse_numbers(scan_shape, "--scan-shape")
    if shape is not None and len(shape) != 2:
        raise ConfigError(f"--scan-shape needs two integers Ny,Nx, got {scan_shape}")
    found = read_metadata(source, key) if source.exists() else {}
    given = {"energy_kv": energy_kv, "conv_angle_mrad": conv_angle_mrad, "dk_inv_ang": dk_inv_ang,
             "step_ang": step_ang}
    values = {name: value if value is not None else found.get(name) for name, value in given.items()}
    missing = [f"--{name.replace('_', '-')}" for name, value in values.items() if value is None]
    if missing:
        raise ConfigError(f"{source} does not give {', '.join(missing)}; give them on the command line"
                          + (f" (it gives {', '.join(sorted(found))})" if found else ""))
    for name, value in found.items():
        if name in given and given[name] is None:
            console.print(f"from the file: {name} = {value:.6g}")
    shape = shape or found.get("scan_shape")
    try:
        extra = json.loads(aberrations) if aberrations else {}
    except json.JSONDecodeError as err:
        raise ConfigError(f"--aberrations is not valid JSON ({err})") from None
    dataset = dataset_from_foreign_file(
        source, step_ang=values["step_ang"], key=key, scan_shape=shape, permute=_parse_numbers(permute, "--permute"),
        energy_kv=values["energy_kv"], conv_angle_mrad=values["conv_angle_mrad"], dk_inv_ang=values["dk_inv_ang"],
        aberrations={"defocus": defocus_ang, **extra}, counts=counts, dose_e_per_ang2=dose_e_per_ang2,
        scan_region=(_parse_range(scan_crop_y, "--scan-crop-y"), _parse_range(scan_crop_x, "--scan-crop-x"))
        if scan_crop_y or scan_crop_x else None,
    )
    if preprocess is not None:
        try:
            steps = TypeAdapter(list[Step]).validate_python(yaml.safe_load(preprocess.read_text()) or [])
        except (OSError, yaml.YAMLError, ValidationError) as err:
            raise ConfigError(f"cannot use preprocessing file {preprocess}: {err}") from None
        pre = Preprocessor(steps, dataset)
        if pre.has_on_the_fly:
            raise ConfigError("convert precomputes; set mode: precompute on every step (on_the_fly is for runs)")
        dataset = pre.precompute(dataset)
    written = write_dataset(out, dataset)
    console.print(f"wrote {written}: {dataset.n_patterns} patterns of {dataset.detector_shape} px")


@command()
def simulate(
    preset: Annotated[str, typer.Option(help="sto-tiny | sto-demo | sto-small | sto-poster")],
    out: Annotated[Path, typer.Option(help="ptyopt dataset file to write (.h5)")],
    dose: Annotated[float | None, typer.Option(help="dose [e/Å²] for Poisson noise (default: the preset's)")] = None,
    noise_free: Annotated[bool, typer.Option(help="write noise-free intensities, ignoring any dose")] = False,
    seed: Annotated[int | None, typer.Option(help="seed of phonons, position jitter and noise")] = None,
    scan: Annotated[str | None, typer.Option(help="scan size Ny,Nx")] = None,
    step_ang: Annotated[float | None, typer.Option(help="scan step [Å]")] = None,
    thickness_uc: Annotated[int | None, typer.Option(help="thickness in unit cells (3.905 Å)")] = None,
    recon_slices: Annotated[int | None, typer.Option(help="slices of the truth's reconstruction slicing")] = None,
    defocus_ang: Annotated[float | None, typer.Option(help="defocus [Å] (= -C10, positive = underfocus)")] = None,
    tilt_mrad: Annotated[str | None, typer.Option(help="specimen tilt theta_y,theta_x [mrad]")] = None,
    phonons: Annotated[int | None, typer.Option(help="frozen-phonon configurations (0 = static)")] = None,
    jitter_ang: Annotated[float | None, typer.Option(help="RMS scan-position jitter [Å]")] = None,
    drift_ang: Annotated[str | None, typer.Option(
        help="linear drift DY,DX over the whole scan [Å] (its direction is the vector's)")] = None,
    scan_affine: Annotated[str | None, typer.Option(
        help="scan-coil error ROTATION_MRAD,SCALE,SHEAR about the scan centre (e.g. 10,0.02,0.01)")] = None,
    focal_spread_ang: Annotated[float | None, typer.Option(help="defocus standard deviation [Å]")] = None,
    source_size_ang: Annotated[float | None, typer.Option(help="Gaussian source standard deviation [Å]")] = None,
    scan_rotation_deg: Annotated[float | None, typer.Option(
        help="detector rotated against the scan [deg] (test data for `ptyopt calibrate`)")] = None,
    detector_transpose: Annotated[bool, typer.Option(help="detector axes swapped (after the rotation)")] = False,
    descan_px: Annotated[str | None, typer.Option(
        help="pattern-centre motion per scan step DCY_DIY,DCY_DIX,DCX_DIY,DCX_DIX [px/step]")] = None,
    centre_offset_px: Annotated[str | None, typer.Option(
        help="pattern centre minus K//2 at the scan's middle DY,DX [px]")] = None,
    no_cache: Annotated[bool, typer.Option(help="recompute even when a cached result exists")] = False,
) -> None:
    """Simulate an SrTiO3 4D-STEM dataset with abTEM and write it with its ground truth."""
    from ptyopt.data import write_dataset
    from ptyopt.simulate.presets import get_preset, with_overrides
    from ptyopt.simulate.run import simulate_dataset

    scan_shape = _parse_numbers(scan, "--scan")
    tilt = _parse_numbers(tilt_mrad, "--tilt-mrad", float)
    drift = _parse_numbers(drift_ang, "--drift-ang", float)
    affine = _parse_numbers(scan_affine, "--scan-affine", float)
    descan = _parse_numbers(descan_px, "--descan-px", float)
    offset = _parse_numbers(centre_offset_px, "--centre-offset-px", float)
    for name, value, count in (("--scan", scan_shape, 2), ("--tilt-mrad", tilt, 2), ("--drift-ang", drift, 2),
                               ("--scan-affine", affine, 3), ("--descan-px", descan, 4),
                               ("--centre-offset-px", offset, 2)):
        if value is not None and len(value) != count:
            raise ConfigError(f"{name} needs {count} comma-separated numbers, got {value}")
    spec = with_overrides(
        get_preset(preset), seed=seed, scan_shape=scan_shape, step_ang=step_ang, thickness_uc=thickness_uc,
        recon_slices=recon_slices, defocus_ang=defocus_ang, tilt_mrad=tilt, frozen_phonons=phonons,
        position_jitter_ang=jitter_ang, drift_ang=drift, scan_affine=affine, focal_spread_ang=focal_spread_ang,
        source_size_ang=source_size_ang, detector_rotation_deg=scan_rotation_deg,
        detector_transpose=detector_transpose or None, centre_offset_px=offset,
        descan_px_per_step=None if descan is None else (descan[:2], descan[2:]),
        dose_e_per_ang2=dose,
    )
    if noise_free:
        spec = spec.model_copy(update={"dose_e_per_ang2": None})
    dataset = simulate_dataset(spec, use_cache=not no_cache)
    written = write_dataset(out, dataset)
    noise = f"dose {spec.dose_e_per_ang2:g} e/Å²" if spec.dose_e_per_ang2 else "noise-free"
    console.print(f"wrote {written}: {dataset.n_patterns} patterns of {dataset.detector_shape} px, {noise}")


@command()
def reconstruct(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="reconstruction config")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: output.dir of the config)")] = None,
    device: Annotated[str | None, typer.Option(help="torch device, overrides the config")] = None,
    seed: Annotated[int | None, typer.Option(help="seed, overrides the config")] = None,
    iterations: Annotated[int | None, typer.Option(help="iterations, overrides solver.iterations")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint in the output folder")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace the run the output folder holds (else refused)")] = False,
) -> None:
    """Reconstruct a dataset: writes result.h5, config.yaml, TIFFs, PNGs, report.html (a dashboard rewritten at
    each checkpoint) and metrics.json with a truth.
    An output folder that holds a run is never written into unless --resume continues it or --overwrite
    replaces it."""
    from ptyopt.config import load_config
    from ptyopt.engine import Interrupted
    from ptyopt.reconstruct import run_reconstruction

    overrides = {key: value for key, value in
                 (("device", device), ("seed", seed), ("solver.iterations", iterations)) if value is not None}
    config = load_config(config_path, overrides)
    try:
        run = run_reconstruction(config, out_dir=out, resume=resume, overwrite=overwrite)
    except Interrupted as err:
        err_console.print(f"[yellow]{err}[/]")
        raise typer.Exit(130) from None
    _report(run)


def _report(run) -> None:
    if "stopped_at" in run.result.attrs:
        console.print(f"stopped after iteration {run.result.attrs['stopped_at']} (solver.stop_when): "
                      f"{run.result.attrs['stop_reason']}")
    console.print(f"results in {run.out_dir}:")
    for label, path in run.files.items():
        console.print(f"  {label:>16}: {path.name}")
    import numpy as np

    scan = run.result.scan
    if scan is not None and (np.any(scan.affine_matrix != np.eye(2)) or np.any(scan.drift_ang != 0)):
        a = scan.affine_matrix
        console.print(f"global scan model: A = [[{a[0, 0]:.5f}, {a[0, 1]:.5f}], [{a[1, 0]:.5f}, {a[1, 1]:.5f}]] "
                      f"(y, x) about ({scan.centre_ang[0]:.2f}, {scan.centre_ang[1]:.2f}) Å; drift [Å] " + ", ".join(
                          f"d{k} ({d[0]:.4f}, {d[1]:.4f})" for k, d in enumerate(scan.drift_ang))
                      + f"; largest displacement {np.abs(scan.displacement_ang).max():.3f} Å")
    if run.metrics:
        console.print("against the truth: " + ", ".join(
            f"{k} {v:.4g}" for k, v in run.metrics.items() if k in ("pearson_r", "rmse_rad", "nrmse")))


@command("template", target=config_app)
def config_template_cmd(
    data: Annotated[str, typer.Option(help="data path to put in the template")] = "dataset.h5",
    recipe: Annotated[str, typer.Option(help=f"named recipe: {RECIPE_HELP}")] = DEFAULT_RECIPE,
    n_slices: Annotated[int | None, typer.Option(min=1, help="model.n_slices (default: a placeholder, 8)")] = None,
    slice_thickness_ang: Annotated[float | None, typer.Option(
        help="model.slice_thickness_ang [Å] (default: a placeholder, 3.905)")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="instead of a recipe: every key with its default and meaning")] = False,
) -> None:
    """Print a complete, runnable config: a named recipe chosen by measurement (placeholders: the data path and
    the slicing), or with --full every key with its default and meaning."""
    from ptyopt.config_template import config_template
    from ptyopt.recipes import recipe_text

    if full:
        print(config_template(data))
        return
    print(recipe_text(recipe, data_path=data, n_slices=n_slices, slice_thickness_ang=slice_thickness_ang))


@command("validate", target=config_app)
def config_validate_cmd(config_path: Annotated[Path, typer.Argument(metavar="CONFIG.yaml")]) -> None:
    """Check a config file as a run would (solver names, options and capabilities included); print the resolved
    config (every default filled) and notes on keys the chosen solvers do not use."""
    from ptyopt.config import dump_config, load_config
    from ptyopt.solvers.checks import check_config

    config = load_config(config_path)
    notes = check_config(config)
    if not config.data.path.exists():
        err_console.print(f"[yellow]warning:[/] data file {config.data.path} does not exist (yet)")
    print(dump_config(config))
    for note in notes:
        err_console.print(f"note: {note}", soft_wrap=True)
    console.print(f"[green]{config_path} is valid[/]", soft_wrap=True)


@command()
def study(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="study specification")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: study_<name> beside the spec)")] = None,
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (instead of local workers)")] = None,
    profile: Annotated[str | None, typer.Option(help="a scale defined in the spec, e.g. poster")] = None,
) -> None:
    """Run a controlled study (settings × seeds) and write results.csv, report.md and report.html (self-contained,
    with the mean ± CI curves); resumes when rerun."""
    from ptyopt.progress import progress_bar
    from ptyopt.studies.report import write_report
    from ptyopt.studies.runner import is_finished, run_study
    from ptyopt.studies.spec import expand_runs, load_spec

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    spec, base_dir = load_spec(spec_path)
    runs = expand_runs(spec, base_dir, profile)
    out_dir = out or spec_path.parent / f"study_{spec.name}"
    done = sum(is_finished(out_dir, run) for run in runs)
    console.print(f"{spec.name}: {len(runs)} runs, {done} already finished, results in {out_dir}")
    with progress_bar() as bar:
        task = bar.add_task("study", total=len(runs), completed=done)
        rows = run_study(spec, runs, out_dir, workers=workers, scheduler=scheduler,
                         on_row=lambda row: bar.advance(task))
    report = write_report(spec, runs, rows, out_dir)
    console.print(f"wrote {out_dir / 'results.csv'}, {report} and {report.with_name('report.html')}")


@command()
def bench(
    preset: Annotated[str, typer.Option(help="cpu-small, poster (a GPU setup) or tiny")] = "cpu-small",
    json_file: Annotated[Path | None, typer.Option("--json", help="write the result as JSON to this file")] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: the preset's)")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="untimed iterations first")] = 2,
    iterations: Annotated[int, typer.Option(min=1, help="timed iterations (the median is reported)")] = 5,
    compile: Annotated[bool, typer.Option(help="torch.compile the multislice forward")] = False,
    chunk_patterns: Annotated[int | None, typer.Option(min=1, help="force chunks of this many patterns")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch")] = None,
    op_profile: Annotated[Path | None, typer.Option(
        help="profile one more iteration; write the operator table (torch.profiler) to this text file")] = None,
    time_to_accuracy: Annotated[Path | None, typer.Option(
        "--time-to-accuracy", metavar="CONFIG.yaml",
        help="instead of a preset: run this config (data with a ground truth, e.g. from `ptyopt simulate`) and "
             "report the solver time to each --r threshold")] = None,
    r: Annotated[str, typer.Option("--r", help="time-to-accuracy: Pearson r thresholds, comma-separated")] = (
        "0.98,0.985,0.99"),
    max_iterations: Annotated[int | None, typer.Option(
        min=1, help="time-to-accuracy: iterations to run (default: the config's solver.iterations)")] = None,
) -> None:
    """Time a reconstruction setup: median s/iteration, patterns/s, peak memory and the measured FFT floor; or,
    with --time-to-accuracy, the time a config takes to reach given accuracies against the truth."""
    from ptyopt.bench import get_bench_preset, run_bench

    if time_to_accuracy is not None:
        _time_to_accuracy(time_to_accuracy, r, max_iterations, threads, device, json_file)
        return
    chosen = get_bench_preset(preset)
    overrides: dict[str, Any] = {"compute.compile": compile}
    if chunk_patterns is not None:
        overrides["compute.chunk_patterns"] = chunk_patterns
    if threads is not None:
        overrides["compute.threads"] = threads
    with err_console.status(f"bench {chosen.name}") as status:
        result = run_bench(chosen, device=device, warmup=warmup, iterations=iterations, overrides=overrides,
                           progress=lambda message: status.update(f"bench {chosen.name}: {message}"),
                           op_profile=op_profile)
    table = Table(title=f"ptyopt bench {result.preset}", show_header=False)
    rows = [
        ("setup", result.description),
        ("device", f"{result.device}, {result.threads} threads, compile {'on' if result.compile else 'off'}"),
        ("time per iteration", f"{result.median_iteration_s:.3f} s (median of {result.timed_iterations})"),
        ("patterns per second", f"{result.patterns_per_s:,.0f}"),
        ("FFT floor", f"{result.fft_floor_s:.3f} s ({result.fft_calls_per_iteration} FFT calls per iteration)"),
        ("iteration / FFT floor", f"{result.ratio_to_fft_floor:.2f}"),
        ("memory estimate per batch", f"{result.memory_estimate_mib:,.0f} MiB, {result.chunks_per_batch} chunk(s)"),
        ("peak host RSS", f"{result.peak_host_rss_mib:,.0f} MiB"),
    ]
    if result.peak_gpu_mib is not None:
        rows.append(("peak GPU memory", f"{result.peak_gpu_mib:,.0f} MiB"))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if result.host_busy_fraction is not None and result.host_busy_fraction > 0.1:
        busy = 100 * result.host_busy_fraction
        err_console.print(f"[yellow]other processes used {busy:.0f} % of the CPU just before the timing: "
                          "these times are not a clean benchmark[/]")
    if json_file is not None:
        json_file.write_text(result.to_json())
        console.print(f"written {json_file}")
    if op_profile is not None:
        console.print(f"written {op_profile}")


def _time_to_accuracy(config_path: Path, r: str, max_iterations: int | None, threads: int | None,
                      device: str | None, json_file: Path | None) -> None:
    from ptyopt.bench_accuracy import run_time_to_accuracy

    thresholds = list(_parse_numbers(r, "--r", float))
    result = run_time_to_accuracy(config_path, thresholds, iterations=max_iterations, threads=threads,
                                  device=device)
    table = Table(title=f"ptyopt bench --time-to-accuracy {config_path.name}")
    for column in ("Pearson r ≥", "iteration", "solver time (s)", "patterns evaluated"):
        table.add_column(column, justify="right")
    for row in result.thresholds:
        reached = row["iteration"] is not None
        work = row["forward_evaluations"]
        table.add_row(f"{row['pearson_r']:g}", str(row["iteration"]) if reached else "not reached",
                      f"{row['time_s']:.2f}" if reached else "–", f"{work:,.0f}" if work is not None else "–")
    console.print(table)
    console.print(f"{result.solver} on {result.device} ({result.threads} threads): {result.iterations} iterations in "
                  f"{result.loop_time_s:.1f} s; r best {result.best_pearson_r:.4f}, final {result.final_pearson_r:.4f}")
    if json_file is not None:
        json_file.write_text(result.to_json())
        console.print(f"written {json_file}")


@command()
def plan(
    config_path: Annotated[Path | None, typer.Argument(
        metavar="[CONFIG.yaml]", help="reconstruction config (its data file gives the experiment)")] = None,
    energy_kv: Annotated[float | None, typer.Option(help="accelerating voltage [kV]")] = None,
    conv_angle_mrad: Annotated[float | None, typer.Option(help="probe convergence semi-angle [mrad]")] = None,
    defocus_ang: Annotated[float | None, typer.Option(help="defocus [Å] (positive = underfocus)")] = None,
    step_ang: Annotated[float | None, typer.Option(help="scan step [Å]")] = None,
    scan: Annotated[str | None, typer.Option(help="scan size Ny,Nx")] = None,
    detector_px: Annotated[int | None, typer.Option(help="pattern size K the model sees [px]")] = None,
    dk_inv_ang: Annotated[float | None, typer.Option(help="detector pixel the model sees [1/Å]")] = None,
    n_slices: Annotated[int | None, typer.Option(help="object slices")] = None,
    slice_thickness_ang: Annotated[float | None, typer.Option(help="slice thickness [Å]")] = None,
    probe_modes: Annotated[int | None, typer.Option(help="probe modes")] = None,
    object_modes: Annotated[int | None, typer.Option(help="object modes")] = None,
    batch_size: Annotated[int | None, typer.Option(help="patterns per batch")] = None,
    thickness_ang: Annotated[float | None, typer.Option(help="specimen thickness [Å] (default: the slices')")] = None,
    device: Annotated[str | None, typer.Option(help="device the run will use (cpu, cuda)")] = None,
    bench_json: Annotated[Path | None, typer.Option("--bench", help="a 'ptyopt bench --json' record of this machine "
                                                                   "(default: the one shipped for the device)")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="write the plan as JSON to this file")] = None,
) -> None:
    """Before a reconstruction: sampling, overlap, resolution (lateral and depth), suggested slicing, memory and
    time per iteration, and warnings on unsafe choices; from a config, from numbers, or a config with numbers
    changed."""
    import dataclasses

    from ptyopt.plan import PlanInputs, bench_record, inputs_from_config, make_plan

    shape = _parse_numbers(scan, "--scan")
    if shape is not None and len(shape) != 2:
        raise ConfigError(f"--scan needs two integers Ny,Nx, got {scan}")
    given = {"energy_kv": energy_kv, "conv_angle_mrad": conv_angle_mrad, "defocus_ang": defocus_ang,
             "step_ang": step_ang, "detector_px": detector_px, "dk_inv_ang": dk_inv_ang, "n_slices": n_slices,
             "slice_thickness_ang": slice_thickness_ang, "probe_modes": probe_modes, "object_modes": object_modes,
             "batch_size": batch_size, "specimen_thickness_ang": thickness_ang, "device": device}
    given = {key: value for key, value in given.items() if value is not None}
    if config_path is not None:
        from ptyopt.config import load_config

        inputs = inputs_from_config(load_config(config_path))
        if shape is not None:
            given.update(n_positions=shape[0] * shape[1])
        inputs = dataclasses.replace(inputs, **given)
    else:
        needed = ("energy_kv", "conv_angle_mrad", "step_ang", "detector_px", "dk_inv_ang", "n_slices",
                  "slice_thickness_ang")
        missing = [f"--{name.replace('_', '-')}" for name in needed if name not in given] + (
            ["--scan"] if shape is None else [])
        if missing:
            raise ConfigError(f"plan needs a CONFIG.yaml or these numbers: {', '.join(missing)}")
        extent = tuple(float((n - 1) * given["step_ang"]) for n in shape)
        inputs = PlanInputs(n_positions=shape[0] * shape[1], scan_extent_ang=extent, **given)
    result = make_plan(inputs, bench_record(bench_json, inputs.device))
    table = Table(title="ptyopt plan", show_header=False)
    for row in result.rows():
        table.add_row(*row)
    console.print(table)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if not result.warnings:
        console.print("[green]no warnings: the sampling, overlap and slicing are within safe ranges[/]")
    if json_file is not None:
        json_file.write_text(result.to_json())
        console.print(f"written {json_file}")


@command()
def inspect(path: Annotated[Path, typer.Argument(help="ptyopt dataset file, or any readable 4D-STEM file")]) -> None:
    """Describe a dataset: shapes, sampling, metadata and ground truth (a foreign file's patterns are not read)."""
    import numpy as np

    from ptyopt.data import is_dataset_file, read_array, read_dataset

    if is_dataset_file(path):
        summary = read_dataset(path).summary()
    else:
        from ptyopt.data.readers import read_metadata

        array = read_array(path, lazy=True)  # shape and dtype only: the patterns are not read
        size_mib = int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize / 2**20
        summary = {"file": str(path), "shape": tuple(array.shape), "dtype": str(array.dtype),
                   "size": f"{size_mib:,.1f} MiB",
                   **{f"metadata: {name}": value for name, value in read_metadata(path).items()},
                   "note": "foreign file: convert it with 'ptyopt convert' (it takes what the file gives and asks "
                           "for the rest)"}
    table = Table(title=str(path), show_header=False)
    for name, value in summary.items():
        table.add_row(name, str(value))
    console.print(table)


@command()
def calibrate(
    path: Annotated[Path, typer.Argument(metavar="DATA", help="ptyopt dataset file (a raster scan)")],
    json_file: Annotated[Path | None, typer.Option("--json", help="write the estimates as JSON")] = None,
    figures: Annotated[Path | None, typer.Option(
        help="folder for the figures (rotation.png, centres.png, disk.png); default: DATA's name + _calibration")]
        = None,
    conv_angle_mrad: Annotated[float | None, typer.Option(
        help="convergence semi-angle [mrad] for dk (default: the file's)")] = None,
    config: Annotated[Path | None, typer.Option(
        help="write a runnable config that undoes what was measured (a detector_correction step)")] = None,
    recipe: Annotated[str, typer.Option(help=f"the config's recipe: {RECIPE_HELP}")] = DEFAULT_RECIPE,
    n_slices: Annotated[int | None, typer.Option(min=1, help="the config's model.n_slices")] = None,
    slice_thickness_ang: Annotated[float | None, typer.Option(
        help="the config's model.slice_thickness_ang [Å]")] = None,
    rotation: Annotated[str, typer.Option(
        help="the config handles the detector's rotation in the model (positions in the detector's frame, no "
             "resampling) or by resampling the patterns: model | resample")] = "model",
    thickness_ang: Annotated[float | None, typer.Option(
        help="specimen thickness [Å], for the defocus at the entrance surface (default: n-slices × "
             "slice-thickness-ang when both are given)")] = None,
) -> None:
    """Estimate the detector's rotation and transpose against the scan, the pattern centre and descan, the
    bright-field disk radius and the reciprocal pixel size from the data alone, with uncertainties; with
    --config, write a config that undoes them."""
    from rich.markup import escape

    from ptyopt.calibrate import calibrate as run_calibration
    from ptyopt.calibrate import calibrated_config, write_figures
    from ptyopt.data import is_dataset_file, read_dataset
    from ptyopt.recipes import recipe_text

    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    if not is_dataset_file(path):
        raise ConfigError(f"{path} is not a ptyopt dataset file; convert it first with 'ptyopt convert' (it asks for "
                          "the scan shape and the experiment's numbers)")
    if conv_angle_mrad is not None and conv_angle_mrad <= 0:
        raise ConfigError(f"--conv-angle-mrad must be positive, got {conv_angle_mrad}")
    if config is not None:
        recipe_text(recipe, n_slices=n_slices, slice_thickness_ang=slice_thickness_ang)  # refuses before any work
        if rotation not in ("model", "resample"):
            raise ConfigError(f"--rotation takes model or resample, got '{rotation}'")
    if thickness_ang is not None and thickness_ang <= 0:
        raise ConfigError(f"--thickness-ang must be positive, got {thickness_ang}")
    if thickness_ang is None and n_slices is not None and slice_thickness_ang is not None:
        thickness_ang = n_slices * slice_thickness_ang
    dataset = read_dataset(path)
    result = run_calibration(dataset, conv_angle_mrad=conv_angle_mrad, thickness_ang=thickness_ang)
    table = Table(title=f"ptyopt calibrate {path.name}")
    for column in ("estimate", "value", "±", "unit", "how"):
        table.add_column(column)
    record = result.to_json()
    for name, estimate in record.items():
        if isinstance(estimate, dict):
            table.add_row(name, escape(_fmt(estimate["value"])), escape(_fmt(estimate["uncertainty"])),
                          estimate["unit"], escape(estimate["how"]))
    console.print(table)
    if result.hot_pixels:
        console.print(f"{len(result.hot_pixels)} hot pixel(s) (y, x): {result.hot_pixels[:10]}")
    out = figures or path.with_name(path.stem + "_calibration")
    written = write_figures(result, out)
    console.print(f"figures: {', '.join(str(p) for p in written)}")
    if json_file is not None:
        json_file.write_text(json.dumps(record, indent=1))
        console.print(f"written {json_file}")
    if config is not None:
        text, notes = calibrated_config(result, str(path.resolve()), dataset.dk_inv_ang, recipe=recipe,
                                        n_slices=n_slices, slice_thickness_ang=slice_thickness_ang, rotation=rotation,
                                        file_aberrations=dataset.aberrations)
        config.write_text(text)
        for note in notes:
            console.print(f"note: {note}")
        console.print(f"written {config}: run it with `ptyopt reconstruct {config}`")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@command()
def evaluate(
    result_path: Annotated[Path, typer.Argument(metavar="RESULT.h5", help="result file of a reconstruction")],
    truth: Annotated[Path | None, typer.Option(help="dataset file holding the ground truth")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the metrics as strict JSON")] = None,
    margin_ang: Annotated[float, typer.Option(help="margin inside the scanned region [Å]")] = 2.0,
    remove_ramp: Annotated[bool, typer.Option(help="also remove a linear phase ramp before comparing")] = False,
    figure: Annotated[Path | None, typer.Option(help="comparison PNG (default: evaluation.png beside RESULT)")] = None,
    compare: Annotated[Path | None, typer.Option(help="second result (e.g. the other half of the positions) "
                                                       "for a half-dataset FRC")] = None,
    data: Annotated[Path | None, typer.Option(help="data file for the R-factor (default: the result's config's)")]
    = None,
    r_factor: Annotated[bool, typer.Option(help="compute the final data R-factor")] = True,
    device: Annotated[str, typer.Option(help="torch device for the R-factor")] = "cpu",
) -> None:
    """Evaluate a reconstruction against the ground truth and/or a second reconstruction (half-dataset FRC)."""
    from ptyopt.data import read_dataset
    from ptyopt.evaluate import (
        align_results,
        align_to_truth,
        compare_results,
        evaluate_result,
        json_safe,
        load_result,
    )
    from ptyopt.evaluate.figures import save_evaluation_figure
    from ptyopt.evaluate.report import summary_rows

    if truth is None and compare is None:
        raise ConfigError("give --truth DATASET.h5 (ground-truth metrics) or --compare OTHER_RESULT.h5 (or both)")
    result = load_result(result_path)
    dataset = read_dataset(truth) if truth is not None else None
    other = load_result(compare) if compare is not None else None
    metrics = (evaluate_result(result, dataset, margin_ang=margin_ang, remove_ramp=remove_ramp,
                               data_r_factor=r_factor, data_path=data, device=device)
               if dataset is not None else {})
    comparison = compare_results(result, other, margin_ang=margin_ang, remove_ramp=remove_ramp) if other else None
    table = Table(title=f"evaluation of {result_path}", show_header=False)
    for name, value in summary_rows(metrics, comparison):
        table.add_row(name, value)
    console.print(table)
    for note in metrics.get("notes", []) + (comparison or {}).get("notes", []):
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    figure = figure or result_path.parent / "evaluation.png"
    if dataset is not None:
        alignment = align_to_truth(result, dataset.truth, margin_ang=margin_ang, remove_ramp=remove_ramp)
        title = (f"RMSE {metrics['rmse_rad']:.4g} rad, SSIM {metrics['ssim']:.3f}, r {metrics['pearson_r']:.4f}, "
                 f"shift ({metrics['shift_px'][0]:.2f}, {metrics['shift_px'][1]:.2f}) px")
        save_evaluation_figure(figure, alignment, metrics["frc"], title=title)
    else:
        alignment = align_results(result, other, margin_ang=margin_ang, remove_ramp=remove_ramp)
        save_evaluation_figure(figure, alignment, comparison["frc"], labels=("result A (aligned)", "result B"),
                               title=f"half-dataset comparison: {result_path.name} vs {compare.name}")
    console.print(f"figure: {figure}")
    if json_path is not None:
        payload = {"result": str(result_path), "truth": None if truth is None else str(truth), **metrics}
        if comparison is not None:
            payload["compare"] = {"other_result": str(compare), **comparison}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False))
        console.print(f"metrics: {json_path}")


@command()
def explain(
    result_path: Annotated[Path, typer.Argument(metavar="RESULT.h5", help="result file of a reconstruction")],
    out: Annotated[Path | None, typer.Option(help="folder for the figures and explain.json "
                                                  "(default: explain/ beside RESULT)")] = None,
    cut: Annotated[list[str] | None, typer.Option(
        help="loss-landscape cut (repeatable): defocus, slice_thickness, tilt_y, tilt_x, or position:N (a map "
             "of position N moved)")] = None,
    cut_range: Annotated[float | None, typer.Option(help="half range of the cuts in their unit (Å, mrad)")] = None,
    cut_points: Annotated[int, typer.Option(help="points per cut")] = 21,
    compare: Annotated[Path | None, typer.Option(help="the other half-dataset result, for the per-slice FRC")] = None,
    data: Annotated[Path | None, typer.Option(help="data file (default: the result's config's)")] = None,
    positions: Annotated[int, typer.Option(help="positions (evenly spread) for the gradients and cuts")] = 256,
    device: Annotated[str, typer.Option(help="torch device")] = "cpu",
) -> None:
    """Why a reconstruction works or fails: the probe through the slices, each loss term's share of each
    tensor's gradient over the iterations, loss-landscape cuts, the position-correction field, the data residual
    per position, the per-slice FRC between half-dataset results. One figure each, numbers in explain.json."""
    from ptyopt.explain import ExplainOptions, explain_result
    from ptyopt.explain.run import EXPLAIN_JSON

    options = ExplainOptions(cuts=cut or ["defocus"], cut_range=cut_range, cut_points=cut_points, compare=compare,
                             data=data, device=device, positions=positions)
    folder = out or result_path.parent / "explain"
    with err_console.status("explain: computing the diagnostics"):
        summary = explain_result(result_path, folder, options)
    table = Table(title=f"explain {result_path}", show_header=False)
    depth = summary["probe_depth"]
    for label, rms, core in zip(depth["labels"], depth["rms_radius_ang"], depth["core_fraction"], strict=True):
        table.add_row(f"probe {label}", f"RMS radius {rms[0]:.2f} → {rms[-1]:.2f} Å through the slices; within "
                                        f"{depth['core_radius_ang']:g} Å: {core[0]:.2f} → {core[-1]:.2f}")
    final = summary["gradient_shares"]["values"][-1]
    for tensor, shares in final["shares"].items():
        table.add_row(f"gradient of {tensor}", ", ".join(f"{term} {100 * v:.0f} %" for term, v in shares.items()))
    for entry in summary["cuts"]:
        if entry["index"] is None:
            table.add_row(f"cut {entry['parameter']}", f"minimum at {entry['best_offset']:+.3g} {entry['unit']} from "
                          f"the result (best ≈ {entry['best_value']:.4g} {entry['unit']})")
        else:
            (dy, dx), (y, x) = entry["best_offset"], entry["best_value"]
            table.add_row(f"cut position {entry['index']}", f"minimum at ({dy:+.3f}, {dx:+.3f}) Å from the result, "
                          f"at ({y:.3f}, {x:.3f}) Å")
    field = summary["position_field"]
    table.add_row("position corrections", f"RMS {field['rms_ang']:.3f} Å, max {field['max_ang']:.3f} Å; "
                                          f"best affine removed {field['local_rms_ang']:.3f} Å")
    res = summary["residuals"]
    table.add_row("data residual per position", f"median R {res['median']:.4f}, 95 % {res['p95']:.4f}, worst "
                  + ", ".join(f"#{i} ({v:.4f})" for i, v in zip(res["worst_positions"][:3], res["worst_values"][:3],
                                                                 strict=True)))
    for entry in summary.get("slice_frc", []):
        resolution = entry["frc_resolution_ang"]
        table.add_row(f"slice {entry['slice']} FRC", "no crossing" if resolution is None else f"{resolution:.3f} Å")
    console.print(table)
    for note in summary.get("notes", []):
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"figures and {EXPLAIN_JSON} in {folder}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
