"""``simclrv2 <command>``: argument parsing only; every command calls a library function.

Training commands share ``--preset``, ``--config FILE``, ``--data SOURCE``, ``--out DIR``,
``--resume DIR`` and ``section.key=value`` overrides. Bad input ends in one line on stderr and exit
status 2; SIGTERM/SIGINT end a training command with a checkpoint, a resume hint and status 0
(outside the training loop, e.g. during an evaluation, they stop it at once, as Ctrl-C does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from simclrv2.errors import Interrupted, UserError


def _int_at_least(low: int):
    """argparse type: an integer >= ``low``, else a one-line error naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


# ----------------------------------------------------------------------------------------------
# Shared set-up of the training and evaluation commands


def _config(args: argparse.Namespace):
    """The resolved config: the saved one of ``--resume``, else preset -> file -> overrides ->
    the fields that flags set (``--data``, ``--chunk-size``)."""
    from simclrv2.config import load_config
    from simclrv2.rundir import load_run_config

    flags = {"data.source": args.data, "pretrain.chunk_size": getattr(args, "chunk_size", None)}
    if getattr(args, "resume", None):
        if args.overrides or args.config or any(v is not None for v in flags.values()):
            raise UserError(
                "--resume continues a run with its saved config; drop the other options and overrides"
            )
        return load_run_config(Path(args.resume))
    return load_config(args.preset, args.config, args.overrides, flags)


def _datasets(config):
    from simclrv2 import build

    return build.dataset(config.data, "train"), build.dataset(config.data, config.data.test_split)


def _labelled(spec: str, train, seed: int):
    from simclrv2.data import labelled_indices

    return train.subset(labelled_indices(train, spec, seed))


@contextlib.contextmanager
def _run(args: argparse.Namespace, config, command: str):
    """The run of a training command (:func:`simclrv2.run.open_run`), its directory remembered
    for the resume hint."""
    from simclrv2.run import open_run

    with open_run(command, config, args.out, args.resume) as run:
        args.run_directory = run.directory
        yield run


# ----------------------------------------------------------------------------------------------
# Commands


def _models(args: argparse.Namespace) -> None:
    from simclrv2.models.stats import architecture_table
    from simclrv2.tables import format_table

    rows = architecture_table(args.image_size)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


def _show_config(args: argparse.Namespace) -> None:
    print(_config(args).to_yaml(), end="")


def _print_outcome(metrics: dict, directory: Path) -> None:
    """A stage's metrics (less the confusion matrix) and where its model is; rank 0 alone prints
    under torchrun, where every process computes them."""
    from simclrv2 import distributed

    if distributed.rank() == 0:
        print(json.dumps({k: v for k, v in metrics.items() if k != "confusion"}, indent=2))
        print(f"model: {directory / 'model'}")


def _pipeline(args: argparse.Namespace) -> None:
    from simclrv2 import distributed
    from simclrv2.pipeline import TABLE_COLUMNS, run_pipeline
    from simclrv2.tables import format_table

    config = _config(args)
    train, test = _datasets(config)
    with _run(args, config, "pipeline") as run:
        rows = run_pipeline(config, run, train, test)
    if distributed.rank() == 0:
        print(format_table(rows, TABLE_COLUMNS))
        print(f"\nresults: {run.directory / 'results.json'}")


def _pretrain(args: argparse.Namespace) -> None:
    from simclrv2.stages.pretrain import pretrain

    config = _config(args)
    train, test = _datasets(config)
    with _run(args, config, "pretrain") as run:
        result = pretrain(config, run.directory, train, test, run.runtime)
    _print_outcome(result.metrics, run.directory)


def _finetune(args: argparse.Namespace) -> None:
    from simclrv2.export import load_exported
    from simclrv2.stages.finetune import finetune

    config = _config(args)
    train, test = _datasets(config)
    labelled = _labelled(args.labels, train, config.finetune.label_seed)
    init = load_exported(args.init) if args.init else None
    with _run(args, config, "finetune" if args.init else "supervised") as run:
        result = finetune(config, run.directory, labelled, test, run.runtime, init)
    _print_outcome(result.metrics, run.directory)


def _distill(args: argparse.Namespace) -> None:
    from simclrv2.export import load_exported
    from simclrv2.stages.distill import distill

    config = _config(args)
    train, test = _datasets(config)
    labelled = _labelled(args.labels, train, config.finetune.label_seed) if args.labels else None
    teacher = load_exported(args.teacher).classifier_model()
    with _run(args, config, "distill") as run:
        result = distill(config, run.directory, train, labelled, test, run.runtime, teacher)
    _print_outcome(result.metrics, run.directory)


def _evaluate(args: argparse.Namespace) -> None:
    from simclrv2.export import load_exported
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages.evaluate import knn_eval, linear_eval

    setup_logging(None)
    config = _config(args)
    exported = load_exported(args.init)
    train, test = _datasets(config)
    evaluate = linear_eval if args.command == "linear" else knn_eval
    results = evaluate(config, exported, train, test, resolve_runtime(config.runtime))
    print(json.dumps(results, indent=2))


def _embed(args: argparse.Namespace) -> None:
    from simclrv2 import build
    from simclrv2.export import load_exported
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages.embed import embed

    config = _config(args)
    exported = load_exported(args.init)
    data = build.dataset(config.data, args.split)
    out = embed(exported, data, resolve_runtime(config.runtime), Path(args.out))
    print(f"{len(data)} embeddings of dimension {exported.encoder.out_dim}: {out}")


def _show_augmentations(args: argparse.Namespace) -> None:
    import torch

    from simclrv2 import build
    from simclrv2.visualize import augmentation_grid

    config = _config(args)
    data = build.dataset(config.data, args.split)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(data), generator=generator)[: args.images]
    augment = build.pretrain_augment(config.augment, args.size or data.image_size)
    augmentation_grid(data.images[chosen], augment, args.views, generator).save(args.out)
    print(f"{len(chosen)} images x {args.views} views: {args.out}\n{augment}")


def _report(args: argparse.Namespace) -> None:
    from simclrv2.report import build_report

    print(f"report: {build_report(args.run_dir)}")


def _convert_tf(args: argparse.Namespace) -> None:
    from simclrv2.convert.tf_simclr import convert

    plan = convert(args.source, args.out, args.head_input, args.ema, args.overwrite)
    print(f"converted {args.source} -> {args.out}")
    print("\n".join(f"  {line}" for line in plan.summary()))


# ----------------------------------------------------------------------------------------------
# Parser


def _add_config_options(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    parser.add_argument(
        "--preset", default="demo", help="demo (default), fashion-mnist, cifar10-v1, imagenet-v2"
    )
    parser.add_argument("--config", help="YAML file of settings (sections as in `simclrv2 config`)")
    parser.add_argument(
        "--data", help="data source: a path (IDX, CIFAR, STL-10, image folder) or 'embedded'"
    )
    if runs:
        parser.add_argument("--out", help="run directory (default runs/<command>-<preset>-<time>)")
        parser.add_argument(
            "--resume", metavar="DIR", help="continue the run in DIR where it stopped"
        )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="e.g. pretrain.epochs=5 model.arch=r18_1x_sk0",
    )


def _add_chunk_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chunk-size",
        type=int,
        metavar="K",
        help="pretrain K views at a time with gradient caching: a large batch in little memory "
        "(sets pretrain.chunk_size; K divides the images per process)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simclrv2",
        description="SimCLR / SimCLRv2: pretrain, fine-tune and distil ResNets on your images.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pipeline = commands.add_parser(
        "pipeline",
        help="pretrain, fine-tune (1%% and 10%%), supervised baseline, distil: one table",
    )
    _add_config_options(pipeline)
    _add_chunk_size(pipeline)
    pipeline.set_defaults(run=_pipeline)

    pretrain = commands.add_parser(
        "pretrain", help="SimCLR pretraining without labels (kNN and online linear monitors)"
    )
    _add_config_options(pretrain)
    _add_chunk_size(pretrain)
    pretrain.set_defaults(run=_pretrain)

    finetune = commands.add_parser(
        "finetune", help="fine-tune a pretrained model on a label fraction"
    )
    finetune.add_argument(
        "--init",
        help="exported or converted model directory; omit for the supervised-from-scratch baseline",
    )
    finetune.add_argument(
        "--labels",
        default="0.01",
        help="0.01 or 1%%, 25-per-class, or a file (index file or file names)",
    )
    _add_config_options(finetune)
    finetune.set_defaults(run=_finetune)

    distill = commands.add_parser(
        "distill", help="distil a fine-tuned teacher into a student on the unlabelled images"
    )
    distill.add_argument(
        "--teacher",
        required=True,
        help="fine-tuned model directory (its classifier is the teacher)",
    )
    distill.add_argument(
        "--labels", help="labelled subset for the (1 - distill.alpha) cross-entropy term"
    )
    _add_config_options(distill)
    distill.set_defaults(run=_distill)

    for name, text in (
        ("linear", "linear evaluation of a model's representation h"),
        ("knn", "weighted kNN evaluation of h"),
    ):
        evaluate = commands.add_parser(name, help=text)
        evaluate.add_argument("--init", required=True, help="exported or converted model directory")
        _add_config_options(evaluate, runs=False)
        evaluate.set_defaults(run=_evaluate)

    embed = commands.add_parser(
        "embed", help="write h of every image to .npy or .safetensors, with file names"
    )
    embed.add_argument("--init", required=True, help="exported or converted model directory")
    embed.add_argument("--out", required=True, help="output file: NAME.npy or NAME.safetensors")
    embed.add_argument(
        "--split", default="train", help="split of the data to embed (default train)"
    )
    _add_config_options(embed, runs=False)
    embed.set_defaults(run=_embed)

    grid = commands.add_parser(
        "show-augmentations",
        help="PNG grid of random images and their pretraining views, for a person to look at",
    )
    grid.add_argument("--out", required=True, help="PNG file to write")
    grid.add_argument("--views", type=_int_at_least(1), default=6, help="views per image (6)")
    grid.add_argument("--images", type=_int_at_least(1), default=8, help="images, one per row (8)")
    grid.add_argument("--size", type=_int_at_least(8), help="view side (default as pretraining)")
    grid.add_argument("--seed", type=int, default=0, help="picks the images and the views (0)")
    grid.add_argument("--split", default="train", help="split of the data (default train)")
    _add_config_options(grid, runs=False)
    grid.set_defaults(run=_show_augmentations)

    report = commands.add_parser(
        "report",
        help="HTML page with plots of a run (finished or interrupted): RUN_DIR/report.html",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, or one stage's folder")
    report.set_defaults(run=_report)

    show = commands.add_parser(
        "config", help="print the resolved config (preset, file, overrides) as YAML"
    )
    _add_config_options(show, runs=False)
    show.set_defaults(run=_show_config)

    models = commands.add_parser(
        "models", help="table of the named architectures: parameters, paper figure, FLOPs"
    )
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.add_argument(
        "--image-size",
        type=_int_at_least(16),
        default=224,
        help="input side for the FLOP count (default 224)",
    )
    models.set_defaults(run=_models)

    convert = commands.add_parser(
        "convert-tf",
        help="convert the authors' TensorFlow checkpoint (TF1, TF2 or SavedModel) for --init",
    )
    convert.add_argument(
        "source",
        metavar="SOURCE",
        help="folder with a `checkpoint` file, a model.ckpt-N prefix, or a saved_model/ folder",
    )
    convert.add_argument("--out", required=True, metavar="DIR", help="export folder to write")
    convert.add_argument(
        "--head-input",
        type=int,
        metavar="N",
        help="head output the supervised head reads: 0 = h, 1 = first projection layer, -1 = z "
        "(default: 1 under a finetuned_1pct or finetuned_10pct folder, else 0)",
    )
    convert.add_argument(
        "--ema", action="store_true", help="take the weights from the ema_model/ copy (TF1)"
    )
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR")
    convert.set_defaults(run=_convert_tf)
    return parser


def _stop_at_once(signum: int, frame: object) -> None:
    """SIGTERM outside a training loop (which finishes its step first): stop as Ctrl-C does."""
    raise KeyboardInterrupt


def _parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse, letting KEY=VALUE overrides stand anywhere, also after options (argparse alone
    takes positionals only in one run)."""
    args, unparsed = parser.parse_known_args(argv)
    late_overrides = [item for item in unparsed if "=" in item and not item.startswith("-")]
    unknown = [item for item in unparsed if item not in late_overrides]
    if unknown or (late_overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or late_overrides)}")
    if late_overrides:
        args.overrides = [*args.overrides, *late_overrides]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from simclrv2 import distributed

    args = _parse_arguments(build_parser(), argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_at_once) if in_main_thread else None
    try:
        args.run(args)
    except UserError as error:
        print(f"simclrv2: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        command = f"simclrv2 {args.command} --resume {args.run_directory}"
        print(f"simclrv2: {stop}; resume with: {command}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:  # the work done is in the run's checkpoints and finished stages
        if getattr(args, "run_directory", None) is None:
            print("simclrv2: stopped", file=sys.stderr)
            return 130
        command = f"simclrv2 {args.command} --resume {args.run_directory}"
        print(f"simclrv2: stopped; resume with: {command}", file=sys.stderr)
        return 0
    finally:
        distributed.shutdown()  # the process group of a torchrun launch, if any
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0
