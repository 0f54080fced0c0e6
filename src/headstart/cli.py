"""The `headstart` command: each sub-command maps onto one function of the Python API."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from ._util import headstart_log_at
from .cli_options import CONFIG_FILE, CONFIG_HELP, FieldGroup, generated_command, generated_values, write_run_config
from .distributed import FailedOnMain
from .errors import HeadstartError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning with pre-trained models: fit, evaluate, predict.")
out_console = Console()
err_console = Console(stderr=True)


def _setup_logging() -> None:
    """headstart's INFO messages and warnings go to stderr through Rich; chatty libraries are held at WARNING."""
    logger = logging.getLogger("headstart")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=err_console, show_path=False, show_time=False))
    logger.setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def _rank_output() -> Iterator[None]:
    """Under torchrun, rank 0 prints the results and logs progress; the other ranks keep quiet (their stdout
    discarded, their log at errors: rank 0 warns about the same data), so that a run's output reads as one."""
    from .distributed import is_main

    if is_main():
        yield
        return
    with headstart_log_at(logging.ERROR), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def friendly(command: Callable) -> Callable:
    """Report HeadstartError as one line on stderr with exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _setup_logging()
        try:
            with _rank_output():
                return command(*args, **kwargs)
        except FailedOnMain:  # rank 0 has said what went wrong
            raise typer.Exit(2) from None
        except HeadstartError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: checkpoints are kept; `fit ... --resume` continues a finetune run")
            raise typer.Exit(130) from None

    return wrapper


def _file_safe(backbone: str) -> str:
    """A backbone name (`hf:org/model`, a folder path) as part of a default run-folder name."""
    return backbone.replace(":", "_").replace("/", "_")


def _fit_groups() -> list[FieldGroup]:
    """What `fit` offers besides its own options: the fields of the API's option objects and every registered
    strategy's settings."""
    from .options import BackboneOptions, DataOptions, RunOptions, TaskOptions
    from .strategies import STRATEGIES

    return [FieldGroup("backbone", (BackboneOptions,), "Backbone"), FieldGroup("data_options", (DataOptions,), "Data"),
            FieldGroup("task", (TaskOptions,), "Task"), FieldGroup("run_options", (RunOptions,), "Run"),
            FieldGroup("settings", tuple(STRATEGIES.values()), "Strategy settings", defaults=False)]


STRATEGY_HELP = ("probe (frozen backbone, cached embeddings; the default), finetune (the default for --task tokens), "
                 "lora (PEFT adapters), contrastive (SetFit-style few-shot text), auto (chooses and says why), or "
                 "another registered strategy; its settings are listed under Strategy settings.")
CONFIG_OPTION = typer.Option(None, "--config", help=CONFIG_HELP)


@app.command(cls=generated_command(_fit_groups))
@friendly
def fit(
    data: str = typer.Argument(..., help="Image folder, table (csv/tsv/jsonl/parquet) or built-in (digits, fashion-mnist)."),
    strategy: str | None = typer.Option(None, help=STRATEGY_HELP),
    out: Path | None = typer.Option(None, help="Run folder (default runs/<data>-<backbone>-<strategy>)."),
    processes: int = typer.Option(1, help="Run as N processes on this machine: torchrun --standalone "
                                          "--nproc-per-node N with the same options (see Scaling out)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Train a model (a classifier by default) and evaluate it on a held-out split. Options may come from a
    --config file; the run's own are written to RUN/config.yaml."""
    if processes != 1:
        raise typer.Exit(_as_processes(processes, sys.argv[1:]))
    from .api import fit as fit_model
    from .evaluation.report import print_metrics
    from .options import BackboneOptions, DataOptions, RunOptions, TaskOptions
    from .tasks import task_class

    given = generated_values()
    backbone, task = BackboneOptions(**given["backbone"]), TaskOptions(**given["task"])
    strategy = strategy or task_class(task.name or _data_task(data)).default_strategy
    name = Path(data).stem if Path(data).exists() else data
    run_dir = out or Path("runs") / f"{name}-{_file_safe(backbone.name)}-{strategy}"
    model = fit_model(data, backbone, strategy, out=run_dir, task=task, data_options=DataOptions(**given["data_options"]),
                      run_options=RunOptions(**given["run_options"]), **given["settings"])
    write_run_config(run_dir, {"strategy": strategy, "out": run_dir}, model.manifest.strategy.settings)
    print_metrics(model.metrics, title=f"{backbone.name} {strategy}: test split", console=out_console)
    timings = model.manifest.timings
    out_console.print(f"time: {timings['total']:.1f}s ({', '.join(f'{k} {v:.1f}s' for k, v in timings.items() if k != 'total')})")
    out_console.print(f"saved model to {run_dir / 'model'}, metrics to {run_dir / 'metrics.json'}, options to "
                      f"{run_dir / CONFIG_FILE}")


def _data_task(data: str) -> str:
    from .data import data_task

    return data_task(data) or "classification"


def _as_processes(processes: int, arguments: list[str]) -> int:
    """`--processes N`: this command line, less that option, run by N processes under torchrun; its exit code."""
    from . import distributed

    if processes < 1:
        raise HeadstartError(f"--processes must be a whole number >= 1, got {processes}")
    if distributed.launched():
        raise HeadstartError("--processes starts processes of its own: under torchrun leave it out")
    kept, skip = [], False
    for argument in arguments:
        if not skip and argument != "--processes" and not argument.startswith("--processes="):
            kept.append(argument)
        skip = argument == "--processes" and not skip
    return distributed.run_as_processes(processes, kept)


def _select_groups() -> list[FieldGroup]:
    """The option objects' fields that apply to scoring candidates: as `fit` reads and embeds the data."""
    from .options import BackboneOptions, DataOptions, RunOptions

    return [FieldGroup("backbone", (BackboneOptions,), "Backbone", only=("image_size", "max_length")),
            FieldGroup("data_options", (DataOptions,), "Data", only=("text_column", "label_column", "strict")),
            FieldGroup("run_options", (RunOptions,), "Run", only=("seed", "precision", "cache"))]


@app.command(cls=generated_command(_select_groups))
@friendly
def select(
    data: str = typer.Argument(..., help="Labeled data, as `fit` takes it (its training part is scored)."),
    backbones: str = typer.Option(..., help="Comma-separated candidates: names (see `headstart backbones`) or "
                                            "folders, e.g. efficientnet_lite0,efficientnet_lite1,CKPT."),
    per_class: int = typer.Option(50, help="Items per class in the subsample every candidate embeds (drawn with "
                                           "--seed); `fit` reuses the cached embeddings at the same --precision."),
    json_output: bool = typer.Option(False, "--json", help="Print the ranking as JSON on stdout."),
) -> None:
    """Rank candidate backbones for DATA without training any: LogME and kNN accuracy on a class-balanced subsample."""
    from .options import BackboneOptions, DataOptions, RunOptions
    from .selection import select as select_backbones

    given = generated_values()
    result = select_backbones(data, backbones.split(","), per_class=per_class,
                              backbone_options=BackboneOptions(**given["backbone"]),
                              data_options=DataOptions(**given["data_options"]),
                              run_options=RunOptions(**given["run_options"]))
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    table = Table(title=f"{result.data}: {result.items} items ({result.classes} classes, at most {result.per_class} "
                        "each), best first")
    # Short headers keep every column readable at 80 columns: kNN = leave-one-out kNN accuracy, an estimate;
    # ms/item = embedding cost of the items not already cached.
    for column in ("rank", "backbone", "LogME", "kNN acc.", "time s", "ms/item", "cached"):
        table.add_column(column, no_wrap=column == "backbone", justify="left" if column == "backbone" else "right")
    for rank, c in enumerate(result.candidates, 1):
        cost = f"{c.ms_per_item:.1f}" if c.ms_per_item is not None else "-"
        table.add_row(str(rank), c.backbone, f"{c.logme:.4f}", f"{100 * c.knn_accuracy:.1f}%", f"{c.seconds:.1f}",
                      cost, f"{c.cache_hits}/{c.cache_hits + c.cache_misses}")
    out_console.print(table)
    out_console.print(f"best: {result.best.backbone}; next: headstart fit {data} --backbone {result.best.backbone} "
                      "(its embeddings of these items are cached)", highlight=False, soft_wrap=True)


def _audit_groups() -> list[FieldGroup]:
    """The option objects' fields that apply to an audit: as `fit` reads, splits and embeds the data; and the
    strategies' settings, for a judge of the labels fitted on the other folds (--strategy finetune)."""
    from .options import BackboneOptions, DataOptions, RunOptions
    from .strategies import STRATEGIES

    return [FieldGroup("backbone", (BackboneOptions,), "Backbone", only=("image_size", "max_length")),
            FieldGroup("data_options", (DataOptions,), "Data (as fit reads and splits it)",
                       only=("text_column", "label_column", "val_size", "test_size")),
            FieldGroup("run_options", (RunOptions,), "Run", only=("seed", "precision", "cache")),
            FieldGroup("settings", tuple(STRATEGIES.values()), "Strategy settings (with --strategy)",
                       defaults=False)]


@app.command(cls=generated_command(_audit_groups))
@friendly
def audit(
    data: str = typer.Argument(..., help="Labeled data, as `fit` takes it."),
    backbone: str = typer.Option(..., help="Backbone whose embeddings the audit uses (see `headstart backbones`)."),
    against: str | None = typer.Option(None, help="Other data (e.g. the test set) whose items must not be in DATA."),
    out: Path | None = typer.Option(Path("audit.html"), help="HTML page of the findings (and OUT.csv, one row each)."),
    write_clean: Path | None = typer.Option(None, help="Write a table of the items to keep (fit reads it); DATA "
                                                       "itself is never changed."),
    json_output: bool = typer.Option(False, "--json", help="Print the findings as JSON on stdout."),
    near_threshold: float | None = typer.Option(None, help="Cosine similarity of the (mean-centred) embeddings "
                                                          "from which two items count as near duplicates (default "
                                                          "images 0.9, texts and audio 0.99: measured, docs/audit.md)."),
    strategy: str | None = typer.Option(None, help="Judge the labels by this fit strategy (finetune, lora, probe, "
                                                   "...) fitted on the other folds, one fit per fold: finetune "
                                                   "costs minutes and is more precise where the frozen features are "
                                                   "weak. Default: audit's own logistic-regression probe, "
                                                   "cross-validated on the cached embeddings (seconds)."),
) -> None:
    """Find likely label errors, duplicates, leaks across fit's splits, outliers and overlapping classes in DATA."""
    from .auditing import audit as audit_data
    from .options import BackboneOptions, DataOptions, RunOptions

    given = generated_values()
    threshold = {"near_threshold": near_threshold} if near_threshold is not None else {}
    result = audit_data(data, BackboneOptions(name=backbone, **given["backbone"]), against=against, out=out,
                        write_clean=write_clean, data_options=DataOptions(**given["data_options"]),
                        strategy=strategy, run_options=RunOptions(**given["run_options"]), **threshold,
                        **given["settings"])
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), default=str) + "\n")
        return
    from rich.markup import escape

    from .auditing.findings import KINDS

    table = Table(title=f"{result.data}: {result.items:,} items audited with {result.backbone}")
    table.add_column("finding")
    table.add_column("items", justify="right")
    table.add_column("first", overflow="fold")
    for kind, text in KINDS.items():
        found = result.of_kind(kind)
        first = escape(found[0]["item"][:80]) if found else ""  # user text, not rich markup
        table.add_row(text, str(len(found)), first)
    out_console.print(table)
    wrote = [str(p) for p in (out, out.with_suffix(".csv") if out else None, write_clean) if p is not None]
    if wrote:
        out_console.print(f"wrote {', '.join(wrote)}", highlight=False, soft_wrap=True)


def _suggest_groups() -> list[FieldGroup]:
    """The option objects' fields that apply to choosing items: how the unlabeled data are read and embedded."""
    from .options import BackboneOptions, DataOptions, RunOptions

    return [FieldGroup("backbone", (BackboneOptions,), "Backbone", only=("image_size", "max_length")),
            FieldGroup("data_options", (DataOptions,), "Data", only=("text_column", "label_column")),
            FieldGroup("run_options", (RunOptions,), "Run", only=("seed", "precision", "cache"))]


@app.command(cls=generated_command(_suggest_groups))
@friendly
def suggest(
    unlabeled: str = typer.Argument(..., help="Unlabeled items: an image or audio folder, a table's text column, a "
                                              ".txt file (one text a line)."),
    budget: int = typer.Option(..., help="How many items to label next."),
    model: Path | None = typer.Option(None, help="A trained model (RUN or RUN/model): pick uncertain, diverse "
                                                 "items (BADGE)."),
    backbone: str | None = typer.Option(None, help="Cold start without a model: pick typical, diverse items "
                                                   "(TypiClust) on this backbone's embeddings."),
    labeled: str | None = typer.Option(None, help="Labeled data so far (as `fit` takes it): never suggested again; "
                                                  "clusters they cover are skipped, and the classes with "
                                                  "the fewest labels come first."),
    out: Path = typer.Option(Path("to_label.csv"), help="Table to fill in: the item, an empty label, the reason."),
) -> None:
    """Choose which unlabeled items to label next; writes a table to fill in: add its rows to your labeled table."""
    from .auditing import suggest as suggest_items
    from .options import BackboneOptions, DataOptions, RunOptions

    given = generated_values()
    net = BackboneOptions(name=backbone, **given["backbone"]) if backbone is not None else None
    result = suggest_items(unlabeled, budget, model=model, backbone=net, labeled=labeled, out=out,
                           data_options=DataOptions(**given["data_options"]),
                           run_options=RunOptions(**given["run_options"]))
    for item, reason in zip(result.to_dict()["items"], result.reasons):
        out_console.print(f"{item[:80]}  [dim]{reason}[/]", highlight=False, soft_wrap=True)
    out_console.print(f"wrote {len(result.items)} items ({result.method}, of {result.candidates:,} candidates) to "
                      f"{out}: fill in the label column, then add the rows to the labeled table", highlight=False,
                      soft_wrap=True)


def _distill_groups() -> list[FieldGroup]:
    """The student's strategy settings: every registered strategy's."""
    from .strategies import STRATEGIES

    return [FieldGroup("settings", tuple(STRATEGIES.values()), "Strategy settings", defaults=False)]


@app.command(cls=generated_command(_distill_groups))
@friendly
def distill(
    teacher: Path = typer.Argument(..., help="The teacher: a saved model folder (RUN or RUN/model)."),
    unlabeled: str = typer.Argument(..., help="Unlabeled data for the teacher to label: a table's text column, a "
                                              ".txt file (one text a line), an image folder."),
    backbone: str = typer.Option("minilm", help="The student's backbone (smaller and faster than the teacher's)."),
    strategy: str = typer.Option("auto", help="How the student learns the teacher's labels (auto: see `fit`)."),
    out: Path | None = typer.Option(None, help="Run folder (default runs/<teacher>-distilled-<backbone>)."),
    data: str | None = typer.Option(None, help="The labeled data the teacher was fitted on, when its recorded "
                                               "source is not a path here."),
    text_column: str | None = typer.Option(None, help="The unlabeled table's text column."),
    precision: str = typer.Option("auto", help="auto (bfloat16 where fast), fp32 or bf16."),
    overwrite: bool = typer.Option(False, help="Write into an --out folder that holds other files."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Train a smaller student on a teacher's labels for unlabeled data; test both on the teacher's test split.
    Its options are written to RUN/config.yaml."""
    from .distillation import distill as distill_model
    from .evaluation.report import print_metrics

    teacher_dir = teacher.parent if teacher.name == "model" else teacher
    run_dir = out or Path("runs") / f"{teacher_dir.name}-distilled-{_file_safe(backbone)}"
    model = distill_model(teacher, unlabeled, backbone, strategy, data=data, unlabeled_column=text_column,
                          out=run_dir, precision=precision, overwrite=overwrite, **generated_values()["settings"])
    write_run_config(run_dir, {"out": run_dir}, model.manifest.strategy.settings)
    record = model.manifest.data.distillation
    print_metrics(model.metrics, title=f"student {backbone} ({model.manifest.strategy.name}): test split",
                  console=out_console)
    teacher_accuracy = record["teacher"]["test_accuracy"]
    against = f", test accuracy {100 * teacher_accuracy:.1f}%" if teacher_accuracy is not None else ""
    out_console.print(f"{record['pseudo_labeled']} items labeled by the teacher ({record['teacher']['backbone']}"
                      f"{against}); saved model to {run_dir / 'model'}", highlight=False, soft_wrap=True)


def _pretrain_groups() -> list[FieldGroup]:
    """What `pretrain` offers besides its own options: the fields of the option objects that apply to it and the
    objectives' options."""
    from .options import BackboneOptions, DataOptions, RunOptions
    from .pretraining.base import ObjectiveOptions, PretrainOptions

    return [FieldGroup("backbone", (BackboneOptions,), "Backbone", only=("image_size", "max_length")),
            FieldGroup("schedule", (PretrainOptions,), "Schedule"),
            FieldGroup("objective_options", (ObjectiveOptions,), "Objective options"),
            FieldGroup("data_options", (DataOptions,), "Data", only=("text_column", "strict")),
            FieldGroup("run_options", (RunOptions,), "Run", only=("seed", "precision", "resume", "logger"))]


@app.command(cls=generated_command(_pretrain_groups))
@friendly
def pretrain(
    data: str = typer.Argument(..., help="Unlabeled data: image folder (sub-folders ignored), built-in (digits, "
                                         "fashion-mnist), a table's text column or a .txt file (one text a line)."),
    objective: str = typer.Option(..., help="autoencoder, masked or contrastive (images); mlm (text)."),
    backbone: str = typer.Option(..., help="Encoder: smallcnn, timm:<name>, efficientnet_lite0; minilm, hf:<id>, "
                                           "a folder."),
    out: Path = typer.Option(..., help="Backbone folder to write (then: headstart fit DATA --backbone OUT)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Self-supervised pretraining on unlabeled data; writes a backbone folder that `fit --backbone` takes, and
    its options to OUT.run/config.yaml."""
    from .options import BackboneOptions, DataOptions, RunOptions
    from .pretraining import pretrain as pretrain_backbone
    from .pretraining.base import PretrainOptions

    given = generated_values()
    result = pretrain_backbone(data, objective, BackboneOptions(backbone, **given["backbone"]), out=out,
                               schedule=PretrainOptions(**given["schedule"]),
                               data_options=DataOptions(**given["data_options"]),
                               run_options=RunOptions(**given["run_options"]), **given["objective_options"])
    p = result.pretraining
    write_run_config(Path(p["run_dir"]), {})
    out_console.print(f"{objective}: {p['steps']} steps ({p['samples_seen']:,} samples, stopped by {p['stopped_by']}) "
                      f"in {p['train_seconds']:.0f}s; loss {p['first_loss']:.4g} -> {p['final_loss']:.4g}")
    out_console.print(f"saved backbone to {out} (loss plot {out / p['loss_plot']}); next: "
                      f"headstart fit LABELED --backbone {out}")


EVALUATION_PRECISION_HELP = ("fp32, bf16, or auto: what was measured faster at the same accuracy for the backbone's "
                             "family and batch size on this CPU (bf16 for text and audio from 64 items on CPUs with "
                             "native bfloat16; fp32 for fewer, for images, and without native bfloat16; bf16 on "
                             "GPUs), stated in the output; default: the precision the model's metrics were "
                             "measured at (fp32).")


def _check_precision(precision: str | None) -> None:
    if precision is not None and precision not in ("auto", "fp32", "bf16"):
        raise HeadstartError(f"--precision must be one of auto, fp32, bf16, got {precision!r}")


@app.command()
@friendly
def evaluate(
    model: Path = typer.Argument(..., help="Saved model folder (RUN/model)."),
    data: str = typer.Argument(..., help="Labeled data. The data the model was fitted on: its recorded test split. "
                                         "Other data: their test split if they have one, else all of them, less any "
                                         "item the model was fitted on (counted in a warning)."),
    json_output: bool = typer.Option(False, "--json", help="Print metrics as JSON on stdout."),
    text_column: str | None = typer.Option(None),
    label_column: str | None = typer.Option(None),
    strict: bool = typer.Option(False, help="Fail on unreadable images instead of skipping them."),
    precision: str | None = typer.Option(None, help=EVALUATION_PRECISION_HELP),
) -> None:
    """Evaluate a saved model on labeled data it was not fitted on."""
    from .api import evaluate as evaluate_model
    from .evaluation.report import print_metrics

    _check_precision(precision)
    metrics = evaluate_model(model, data, text_column=text_column, label_column=label_column, strict=strict,
                             precision=precision)
    if json_output:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        print_metrics(metrics, title=str(model), console=out_console)


@app.command()
@friendly
def report(
    run: Path = typer.Argument(..., help="Run folder (RUN, holding model/ and logs/) or its model folder."),
    data: str | None = typer.Option(None, help="Evaluate on this labeled data instead of the run's test split (as "
                                               "`evaluate` does)."),
    out: Path | None = typer.Option(None, help="HTML file to write (default RUN/report.html)."),
    precision: str | None = typer.Option(None, help=EVALUATION_PRECISION_HELP),
) -> None:
    """Write one self-contained HTML report a person can read (and print)."""
    from .api import report as write_report

    _check_precision(precision)
    out_console.print(f"wrote {write_report(run, data, out, precision)}")


@app.command()
@friendly
def explain(
    model: Path = typer.Argument(..., help="Saved model folder (RUN/model)."),
    inputs: list[str] = typer.Argument(..., help="Image files/folders; for text: tables, .txt files, texts; - for stdin."),
    out: Path = typer.Option(Path("explanations"), help="Folder for the PNG overlays (images) or HTML snippets (text)."),
    method: str | None = typer.Option(None, help="images: occlusion (default; the most faithful, measured) or "
                                                 "gradcam (one backward pass, much faster); text: integrated-gradients."),
    text_column: str | None = typer.Option(None),
) -> None:
    """Show what each prediction rests on: occluded regions for images, token attributions for text; one JSON
    line each."""
    from .api import explain as explain_items
    from .model import TrainedModel
    from .predict import collect_inputs

    loaded = TrainedModel.load(model)
    for record in explain_items(loaded, collect_inputs(loaded, inputs, text_column), out=out, method=method):
        sys.stdout.write(json.dumps(record) + "\n")


@app.command()
@friendly
def predict(
    model: Path = typer.Argument(..., help="Saved model folder (RUN/model)."),
    inputs: list[str] = typer.Argument(..., help="Image files/folders; for text: tables, .txt files, texts; - for stdin."),
    top_k: int = typer.Option(3, help="How many ranked labels to list per input."),
    text_column: str | None = typer.Option(None),
    runtime: str = typer.Option("torch", help="torch (the saved model), onnx / onnx-int8 (the exported graph with "
                                              "ONNX Runtime), openvino / openvino-int8 (the same file with OpenVINO)."),
    out: Path | None = typer.Option(None, help="Write the predictions to FILE.jsonl (the lines printed otherwise), "
                                               "FILE.csv (input, label, score, top_k, error) or FILE.parquet instead "
                                               "of stdout: streamed, in input order, and resumed by a rerun after "
                                               "an interruption (from FILE.partial)."),
    batch_size: int | None = typer.Option(None, help="Items per model call (default 64 images, 128 texts; ONNX 32)."),
    chunk_size: int = typer.Option(4096, help="With --out: items predicted and written per step (memory holds one "
                                              "chunk's predictions)."),
    precision: str | None = typer.Option(None, help="torch runtime: fp32, bf16, or auto: what was measured faster "
                                                      "at the same accuracy for the backbone's family and batch size "
                                                      "on this CPU: bf16 for text and audio from 64 items per call on "
                                                      "CPUs with native bfloat16 (AMX or AVX512-BF16), fp32 for fewer, "
                                                      "for images, and on CPUs without native bfloat16 (bf16 on GPUs); "
                                                      "what it resolved to is logged. Default: the precision the "
                                                      "model's metrics were measured at (fp32), so the labels behind "
                                                      "them and the ONNX graph's."),
) -> None:
    """Predict labels; prints one JSON line per input (or writes them to --out)."""
    from .runtime.prediction_files import check_output_file

    _check_precision(precision)
    if top_k < 1:
        raise HeadstartError(f"--top-k must be a whole number >= 1, got {top_k}")
    if batch_size is not None and batch_size < 1:
        raise HeadstartError(f"--batch-size must be at least 1, got {batch_size}")
    if chunk_size < 1:
        raise HeadstartError(f"--chunk-size must be at least 1, got {chunk_size}")
    if out is not None:
        check_output_file(out)  # a wrong --out fails now, not after predicting
    if runtime != "torch":
        if precision not in (None, "auto", "fp32"):
            raise HeadstartError(f"--precision {precision} applies to --runtime torch: an exported graph computes in "
                                 "its own precision (fp32, or int8)")
        items, records_for = _exported_predictor(model, inputs, top_k, runtime, batch_size)
    else:
        from .model import load
        from .predict import collect_inputs, prediction_records

        trained = load(model, precision=precision)
        items = collect_inputs(trained, inputs, text_column)
        trained.precision = _resolved_for_predict(trained, len(items), batch_size, chunk_size if out else None)
        precision = trained.precision

        def records_for(chunk):  # a collective under torchrun: the model shards its embedding across the ranks
            return prediction_records(trained, chunk, top_k, batch_size)

    settings = {"model": str(model.resolve()), "runtime": runtime, "precision": precision, "top_k": top_k}
    _emit(items, records_for, out, settings, chunk_size)


def _resolved_for_predict(trained, n_items: int, batch_size: int | None, chunk_size: int | None) -> str:
    """The one precision `predict` computes in ("fp32", "bf16"), logged and recorded: the model's choice with
    `auto` resolved for the batches these items make (a chunk's at most, with --out)."""
    from .model import batch_precision

    n = min(n_items, chunk_size) if chunk_size else n_items
    resolved = batch_precision(trained.precision, trained.modality, n, batch_size)
    logging.getLogger("headstart").info("predicting in %s%s", resolved,
                                        " (auto, for this batch size)" if trained.precision == "auto" else "")
    return resolved


def _emit(items, records_for, out: Path | None, settings: dict, chunk_size: int) -> None:
    """Prediction records as JSON lines on stdout, or into the --out file (streamed and resumable, see
    runtime.prediction_files); under torchrun every rank predicts its share and rank 0 alone prints or writes."""
    from . import distributed

    if out is None:
        prints = distributed.is_main()
        for record in records_for(items):  # every rank takes part (the records are a collective) ...
            if prints:  # ... and one prints them
                sys.stdout.write(json.dumps(record) + "\n")
        return
    from .runtime.prediction_files import journal_path, write_prediction_file

    written, kept = write_prediction_file(out, items, records_for, settings=settings, chunk_items=chunk_size)
    if distributed.is_main():
        resumed = f" ({kept} of them kept from the interrupted run's {journal_path(out).name})" if kept else ""
        err_console.print(f"wrote {written} predictions to {out}{resumed}", highlight=False, soft_wrap=True)


def _exported_predictor(model: Path, inputs: list[str], top_k: int, runtime: str, batch_size: int | None):
    """`predict --runtime onnx...`: the items and a records function of the exported graph (each rank predicting
    its share under torchrun), with nothing of the training stack imported."""
    from .runtime import load_runtime, prediction_records
    from .runtime.prediction_files import across_ranks

    graph = load_runtime(model, runtime)
    raw = [line.rstrip("\n") for line in sys.stdin if line.strip()] if inputs == ["-"] else inputs
    items = [item for arg in raw for item in graph.codec.expand_input(arg)]
    if not items:
        raise HeadstartError("no inputs: give files, folders, texts, or - to read lines from stdin")
    return items, across_ranks(lambda chunk: prediction_records(graph, chunk, top_k, batch_size))


@app.command()
@friendly
def export(
    model: Path = typer.Argument(..., help="Saved model folder (RUN/model)."),
    format: str = typer.Option("onnx", "--format", help="Only onnx."),
    quantize: str | None = typer.Option(None, help="int8: dynamic (transformers) or calibrated static (CNNs)."),
    out: Path | None = typer.Option(None, help="Graph file (default RUN/model/model.onnx, or model.int8.onnx)."),
    data: str | None = typer.Option(None, help="Labeled data to check the export on, when the model's own data "
                                               "are not where its manifest says (split as training split them)."),
    parity_items: int = typer.Option(500, help="Validation items to compare ONNX Runtime and PyTorch on."),
    max_drop: float = typer.Option(1.0, help="int8: the largest accuracy drop (points, test split) accepted."),
    force: bool = typer.Option(False, help="int8: write the graph even when accuracy drops more than --max-drop."),
) -> None:
    """Export to ONNX with a parity check against PyTorch (and optionally int8); writes the graph and its JSON."""
    if format != "onnx":
        raise HeadstartError(f"--format must be onnx, got '{format}'")
    from .export import export_onnx

    report = export_onnx(model, out=out, quantize=quantize, data=data, force=force, parity_items=parity_items,
                         max_drop=max_drop)
    p = report.parity
    out_console.print(f"exported {report.graph} ({report.exporter} exporter, {report.seconds:.1f}s)")
    out_console.print(f"parity on {p['items']} {p['source']} items: max |p_onnx - p_torch| = {p['max_abs_diff']:.2g}, "
                      f"top-1 agreement {p['top1_agreement']:.2%}")
    q = report.quantization
    if q:
        metric = q.get("metric", "accuracy")
        out_console.print(f"int8 ({q['method']}): test {metric} {q['accuracy_fp32']:.2%} -> {q['accuracy_int8']:.2%} "
                          f"({-q['drop_points']:+.2f} points on {q['test_items']} items); {q['size_fp32_mb']:.1f} MB "
                          f"-> {q['size_int8_mb']:.1f} MB")
    out_console.print(f"description: {report.sidecar}")


@app.command()
@friendly
def serve(
    model: Path = typer.Argument(..., help="Saved model folder (RUN/model)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000),
    runtime: str = typer.Option("torch", help="torch, onnx, onnx-int8, openvino or openvino-int8 (the ONNX ones "
                                              "need `headstart export` first)."),
    max_batch: int = typer.Option(32, help="Most items run together in one model call (1: no batching)."),
    max_wait_ms: float = typer.Option(5.0, help="How long the first request of a batch waits for others."),
    max_items: int = typer.Option(64, help="Most items in one request (more: 413)."),
    max_body_mb: float = typer.Option(8.0, help="Largest request body (more: 413)."),
    max_queue: int = typer.Option(256, help="Most items waiting for the model (more: 503 with Retry-After)."),
    max_pixels: int = typer.Option(40_000_000, help="Largest image, in pixels, checked before decoding (more: 413)."),
    max_audio_seconds: float | None = typer.Option(None, help="Longest recording, checked before decoding (more: "
                                                   "413); default and most: HEADSTART_MAX_AUDIO_SECONDS, else 600."),
    max_decoded_mb: float = typer.Option(512.0, help="Most memory one request's decoded items take (more: 413)."),
    threads: int | None = typer.Option(None, help="Threads for the ONNX engine (default: all cores)."),
    access_log: bool = typer.Option(True, help="Log one line per request (method, path, status, items, ms); "
                                               "--no-access-log turns it off."),
) -> None:
    """Serve predictions over HTTP: POST /predict, GET /health, GET /metadata, docs at /docs. SIGTERM drains."""
    from .runtime.audio_codec import MAX_AUDIO_SECONDS_ENV
    from .runtime.audio_codec import max_audio_seconds as decoding_limit
    from .serving import Limits
    from .serving import serve as run_server

    if not 1 <= port <= 65535:
        raise HeadstartError(f"--port must be a whole number from 1 to 65535, got {port}")
    most_seconds = decoding_limit()
    max_audio_seconds = most_seconds if max_audio_seconds is None else max_audio_seconds
    if min(max_items, max_queue, max_body_mb, max_pixels, max_audio_seconds, max_decoded_mb) <= 0:
        raise HeadstartError("--max-items, --max-queue, --max-body-mb, --max-pixels, --max-audio-seconds and "
                             "--max-decoded-mb must be positive")
    if max_audio_seconds > most_seconds:
        raise HeadstartError(f"--max-audio-seconds {max_audio_seconds:g} is above the {most_seconds:g} s that "
                             f"decoding allows: set {MAX_AUDIO_SECONDS_ENV}={max_audio_seconds:g} too")
    run_server(model, host, port, runtime, max_batch, max_wait_ms,
               Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), max_items=max_items, max_queue=max_queue,
                      max_pixels=max_pixels, max_audio_seconds=max_audio_seconds, max_decoded_mb=max_decoded_mb),
               threads, access_log=access_log)


@app.command()
@friendly
def backbones(
    folders: list[str] | None = typer.Argument(None, help="Local backbone folders (e.g. from `pretrain`) to describe."),
    json_output: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the named backbones, whether their weights are available offline, and any FOLDERS given."""
    from dataclasses import asdict

    from .backbones import list_backbones

    rows = list_backbones(folders or [])
    if json_output:
        sys.stdout.write(json.dumps([asdict(r) for r in rows]) + "\n")
        return
    # Names are never cut, whatever the terminal's width (a pipe, CI, 80 columns): the description wraps instead.
    # Where the weights come from (package names, install commands) is listed under the table, one backbone a
    # line, so that no command is folded inside a narrow column. Text objects: `[mpnet]` is not Rich markup.
    from rich.text import Text

    table = Table(title="backbones")
    table.add_column("name", no_wrap=True, min_width=max(len(r.name) for r in rows))
    table.add_column("modality", no_wrap=True)
    table.add_column("offline", no_wrap=True)
    table.add_column("description", overflow="fold")
    for r in rows:
        table.add_row(Text(r.name), r.modality, "yes" if r.offline else "no", Text(r.description))
    out_console.print(table)
    sources = Table.grid(padding=(0, 1))
    sources.add_column(no_wrap=True)
    sources.add_column()  # wraps between words: every package name and command stays whole
    for r in rows:
        sources.add_row(Text(f"  {r.name} ({r.modality})"), Text(r.where))
    out_console.print("weights from:")
    out_console.print(sources, highlight=False)


@app.command()
@friendly
def quickstart(out: Path = typer.Option(Path("runs/quickstart"), help="Where to write the runs.")) -> None:
    """Walk the whole path on the embedded `digits` set in a few minutes, with no download."""
    from .quickstart import run_quickstart

    run_quickstart(out, out_console)


def _usage_errors() -> tuple[type, type, type]:
    """(UsageError, NoArgsIsHelpError, Abort) of the click that Typer runs on (Typer >= 0.20 vendors its own)."""
    try:
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - Typer on the public click
        from click.exceptions import NoArgsIsHelpError, UsageError
    return UsageError, NoArgsIsHelpError, typer.Abort


def main() -> None:
    """The console script: usage errors (a misspelt option, a value of the wrong type, an unknown command) are one
    `error:` line with exit code 2, like every other bad input."""
    usage_error, no_args, abort = _usage_errors()
    try:
        code = app(standalone_mode=False)
    except no_args as e:
        out_console.print(e.format_message(), highlight=False, markup=False)
        code = 0
    except usage_error as e:
        where = e.ctx.command_path if e.ctx is not None else "headstart"
        err_console.print(f"[bold red]error:[/] {e.format_message()} (see `{where} --help`)", highlight=False,
                          soft_wrap=True)
        code = 2
    except abort:
        err_console.print("interrupted")
        code = 130
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
