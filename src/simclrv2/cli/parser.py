"""The argument parser of ``simclrv2``: every command, its options and their help."""

from __future__ import annotations

import argparse

from simclrv2.cli import commands


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


def _cosine(text: str) -> float:
    """argparse type: a cosine similarity, a number in [-1, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not -1 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a cosine is in [-1, 1], got {value}")
    return value


def _add_config_options(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    parser.add_argument(
        "--preset",
        default="demo",
        help="demo (default), fashion-mnist, cifar10-v1, imagenet-v2, stl10",
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


def _add_data_roles(parser: argparse.ArgumentParser) -> None:
    """Your own images by role (README, "Your own images"), instead of --data's benchmark."""
    parser.add_argument(
        "--labelled",
        metavar="SOURCE",
        help="your labelled images: class folders or a CSV of path,label (instead of --data)",
    )
    parser.add_argument(
        "--unlabelled",
        metavar="SOURCE",
        action="append",
        help="a pool of unlabelled images (any source; its labels are never read); repeatable",
    )
    parser.add_argument(
        "--test",
        metavar="SOURCE",
        help="a labelled test set: reported, never used to choose (default: none; validation is "
        "held out from the labelled images)",
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
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pipeline = subcommands.add_parser(
        "pipeline",
        help="pretrain, fine-tune (1%% and 10%%), supervised baseline, distil: one table",
    )
    pipeline.add_argument(
        "--labels",
        action="append",
        metavar="SPEC",
        help="label spec to fine-tune on (all, 1%%, 25-per-class, a file); repeatable; default: "
        "finetune.label_fractions with --data, all with --labelled",
    )
    _add_config_options(pipeline)
    _add_data_roles(pipeline)
    _add_chunk_size(pipeline)
    pipeline.set_defaults(run=commands.pipeline)

    pretrain = subcommands.add_parser(
        "pretrain", help="SimCLR pretraining without labels (kNN and online linear monitors)"
    )
    pretrain.add_argument(
        "--init",
        help="exported or converted model to continue from: its encoder, and its projection head "
        "where it has the configured shape; omit to start from random weights",
    )
    _add_config_options(pretrain)
    _add_data_roles(pretrain)
    _add_chunk_size(pretrain)
    pretrain.set_defaults(run=commands.pretrain)

    finetune = subcommands.add_parser(
        "finetune", help="fine-tune a pretrained model on a label fraction"
    )
    finetune.add_argument(
        "--init",
        help="exported or converted model directory; omit for the supervised-from-scratch baseline",
    )
    finetune.add_argument(
        "--labels",
        help="all, 0.01 or 1%%, 25-per-class, or a file (index file or file names); default 1%% "
        "with --data, all with --labelled",
    )
    _add_config_options(finetune)
    _add_data_roles(finetune)
    finetune.set_defaults(run=commands.finetune)

    distill = subcommands.add_parser(
        "distill", help="distil a fine-tuned teacher into a student on the unlabelled images"
    )
    distill.add_argument(
        "--teacher", help="fine-tuned model directory (its classifier is the teacher); required"
    )
    distill.add_argument(
        "--labels", help="labelled subset for the (1 - distill.alpha) cross-entropy term"
    )
    _add_config_options(distill)
    _add_data_roles(distill)
    distill.set_defaults(run=commands.distill)

    for name, text in (
        ("linear", "linear evaluation of a model's representation h"),
        ("knn", "weighted kNN evaluation of h"),
    ):
        evaluate = subcommands.add_parser(name, help=text)
        evaluate.add_argument("--init", required=True, help="exported or converted model directory")
        _add_config_options(evaluate, runs=False)
        _add_data_roles(evaluate)
        evaluate.set_defaults(run=commands.evaluate)

    embed = subcommands.add_parser(
        "embed", help="write h of every image to .npy or .safetensors, with file names"
    )
    embed.add_argument("--init", required=True, help="exported or converted model directory")
    embed.add_argument("--out", required=True, help="output file: NAME.npy or NAME.safetensors")
    embed.add_argument(
        "--split", default="train", help="split of the data to embed (default train)"
    )
    _add_config_options(embed, runs=False)
    embed.set_defaults(run=commands.embed)

    grid = subcommands.add_parser(
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
    grid.set_defaults(run=commands.show_augmentations)

    neighbours = subcommands.add_parser(
        "neighbours",
        help="nearest images by cosine of h (CSV + PNG), or near-duplicate pairs (--duplicates)",
    )
    neighbours.add_argument("--model", required=True, help="exported or converted model directory")
    wanted = neighbours.add_mutually_exclusive_group(required=True)
    wanted.add_argument(
        "--query", metavar="IMAGE_OR_FOLDER", help="image file or folder to look up"
    )
    wanted.add_argument(
        "--duplicates",
        action="store_true",
        help="near-duplicate pairs within --data (or --against)",
    )
    neighbours.add_argument(
        "--against",
        metavar="SOURCE2",
        help="with --duplicates: pairs between --data and this source (a train/test leak check)",
    )
    neighbours.add_argument(
        "--against-split", default="train", help="split of --against (default train)"
    )
    neighbours.add_argument(
        "--k",
        type=_int_at_least(1),
        default=5,
        help="neighbours per query; with --duplicates, partners per image at most (5)",
    )
    neighbours.add_argument(
        "--threshold",
        type=_cosine,
        help="with --duplicates: the least cosine of h of a near-duplicate pair (default 0.95)",
    )
    neighbours.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the CSV and the PNG"
    )
    neighbours.add_argument("--split", default="train", help="split of --data (default train)")
    _add_config_options(neighbours, runs=False)
    neighbours.set_defaults(run=commands.neighbours)

    suggest = subcommands.add_parser(
        "suggest-labels", help="the images of an unlabelled pool to label next, as a file list"
    )
    suggest.add_argument("--model", required=True, help="exported or converted model directory")
    suggest.add_argument("--n", type=_int_at_least(1), required=True, help="images to suggest")
    suggest.add_argument(
        "--out", required=True, metavar="FILE", help="file list to write (names, else indices)"
    )
    suggest.add_argument(
        "--labelled",
        dest="already_labelled",
        metavar="LIST",
        help="images already labelled: an index file or file names",
    )
    suggest.add_argument(
        "--method",
        choices=("kcenter", "uncertain"),
        default="kcenter",
        help="kcenter: k-centre greedy on h (default); uncertain: lowest max softmax (a classifier)",
    )
    suggest.add_argument("--seed", type=int, default=0, help="first centre or tie order (0)")
    suggest.add_argument("--split", default="train", help="split of --data, the pool (train)")
    _add_config_options(suggest, runs=False)
    suggest.set_defaults(run=commands.suggest_labels)

    report = subcommands.add_parser(
        "report",
        help="HTML page with plots of a run (finished or interrupted): RUN_DIR/report.html",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, or one stage's folder")
    report.set_defaults(run=commands.report)

    show = subcommands.add_parser(
        "config", help="print the resolved config (preset, file, overrides) as YAML"
    )
    _add_config_options(show, runs=False)
    _add_data_roles(show)
    show.set_defaults(run=commands.show_config)

    models = subcommands.add_parser(
        "models", help="table of the named architectures: parameters, paper figure, FLOPs"
    )
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.add_argument(
        "--image-size",
        type=_int_at_least(16),
        default=224,
        help="input side for the FLOP count (default 224)",
    )
    models.set_defaults(run=commands.models)

    export = subcommands.add_parser(
        "export", help="ONNX or TorchScript file of a model, to run it without simclrv2"
    )
    export.add_argument(
        "model",
        metavar="MODEL",
        help="exported model directory, or a run directory: its final model (the distilled "
        "student, else the fine-tuned model, else the pretrained one)",
    )
    export.add_argument("--format", required=True, help="onnx or torchscript")
    export.add_argument("--out", required=True, metavar="FILE", help="file to write (replaced)")
    export.add_argument(
        "--part",
        help="classifier (images -> logits; the default where the model has one) or encoder "
        "(images -> h)",
    )
    export.set_defaults(run=commands.export)

    predict = subcommands.add_parser(
        "predict", help="CSV of a classifier's predictions on images: class, probability, top-k"
    )
    predict.add_argument(
        "--model",
        required=True,
        help="exported model directory, or a run directory (its final model, as for export)",
    )
    predict.add_argument("--out", required=True, metavar="FILE", help="CSV file to write")
    predict.add_argument("--split", default="train", help="split of the data (default train)")
    predict.add_argument(
        "--top-k", type=_int_at_least(1), default=5, help="classes listed per image (5)"
    )
    _add_config_options(predict, runs=False)
    predict.set_defaults(run=commands.predict)

    convert = subcommands.add_parser(
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
    convert.set_defaults(run=commands.convert_tf)
    return parser
