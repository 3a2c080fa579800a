"""The commands: each resolves its config and inputs, checks them, opens its run where it trains,
and calls one library function; what it prints is the one thing it adds."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from simclrv2.errors import UserError


def _config(args: argparse.Namespace, fields: dict | None = None):
    """The resolved config: the saved one of ``--resume``, else preset -> file -> overrides ->
    the fields that flags set (``--data``, ``--labelled``, ``--unlabelled``, ``--test``,
    ``--chunk-size``) and the command's own ``fields``."""
    from dataclasses import replace

    from simclrv2.config import load_config
    from simclrv2.rundir import load_run_config

    own = {
        "data.labelled": getattr(args, "labelled", None),
        "data.unlabelled": getattr(args, "unlabelled", None),
        "data.test": getattr(args, "test", None),
    }
    if args.data is not None and (own["data.labelled"] or own["data.unlabelled"]):
        raise UserError(
            "--data (the benchmark protocol) and --labelled/--unlabelled (your own images) "
            "exclude each other; give one"
        )
    flags = {"data.source": args.data, "pretrain.chunk_size": getattr(args, "chunk_size", None)}
    flags |= own | (fields or {})
    if getattr(args, "resume", None):
        if args.overrides or args.config or any(v is not None for v in flags.values()):
            raise UserError(
                "--resume continues a run with its saved config; drop the other options and overrides"
            )
        return load_run_config(Path(args.resume))
    config = load_config(args.preset, args.config, args.overrides, flags)
    if own["data.labelled"] or own["data.unlabelled"]:  # a preset's benchmark source gives way
        config = replace(config, data=replace(config.data, source=None))
    return config


def _run_data(config):
    from simclrv2.run_data import load_run_data

    return load_run_data(config.data)


def _labelled(spec: str, data, seed: int):
    from simclrv2.data import labelled_indices

    train = data.labelled()
    return train.subset(labelled_indices(train, spec, seed, data.labelled_count))


def _inputs(args: argparse.Namespace, **given) -> dict:
    """The command's own inputs (``--init``, ``--teacher``, ``--labels``): as given, or as the run
    that ``--resume`` continues recorded them."""
    from simclrv2.rundir import load_run_inputs

    if not args.resume:
        return given
    if any(value is not None for value in given.values()):
        flags = ", ".join(f"--{name}" for name, value in given.items() if value is not None)
        raise UserError(f"--resume continues a run with its recorded inputs; drop {flags}")
    return load_run_inputs(Path(args.resume))


@contextlib.contextmanager
def _run(args: argparse.Namespace, config, command: str, data, inputs: dict | None = None):
    """The run of a training command (:func:`simclrv2.run.open_run`), its directory remembered
    for the resume hint, its validation split saved there as a file list."""
    from simclrv2 import distributed
    from simclrv2.metrics import LOG
    from simclrv2.run import open_run

    with open_run(command, config, args.out, args.resume, inputs) as run:
        args.run_directory = run.directory
        LOG.info("%s", data.summary())
        if distributed.rank() == 0:
            data.save_validation_list(run.directory)
        yield run


def models(args: argparse.Namespace) -> None:
    from simclrv2.models.stats import architecture_table
    from simclrv2.tables import format_table

    rows = architecture_table(args.image_size)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


def show_config(args: argparse.Namespace) -> None:
    print(_config(args).to_yaml(), end="")


def _headline(metrics: dict) -> str:
    """Scores on the split they report, as JSON (``results.json`` holds the rest)."""
    from simclrv2.scores import headline

    return json.dumps(headline(metrics), indent=2)


def _print_outcome(metrics: dict, directory: Path) -> None:
    """A stage's headline scores and where its model is; rank 0 alone prints under torchrun,
    where every process computes them."""
    from simclrv2 import distributed

    if distributed.rank() == 0:
        print(_headline(metrics))
        print(f"model: {directory / 'model'}")


def pipeline(args: argparse.Namespace) -> None:
    from simclrv2 import distributed
    from simclrv2.deploy import final_model
    from simclrv2.pipeline import TABLE_COLUMNS, run_pipeline
    from simclrv2.tables import format_table

    config = _config(args)
    inputs = _inputs(args, labels=args.labels)
    data = _run_data(config)
    with _run(args, config, "pipeline", data, inputs) as run:
        rows = run_pipeline(config, run, data, inputs.get("labels"))
    if distributed.rank() == 0:
        final, _ = final_model(run.directory)
        print(format_table(rows, TABLE_COLUMNS))
        print(f"\nresults: {run.directory / 'results.json'}\nfinal model: {final}")
        print(
            f"predict with: simclrv2 predict --model {run.directory} --data SOURCE --out preds.csv"
        )


def pretrain(args: argparse.Namespace) -> None:
    from simclrv2.export import load_exported
    from simclrv2.stages import pretrain as stage

    config = _config(args)
    inputs = {k: v for k, v in _inputs(args, init=args.init).items() if v is not None}
    data = _run_data(config)
    init = load_exported(inputs["init"]) if inputs.get("init") else None
    with _run(args, config, "pretrain", data, inputs) as run:
        result = stage.pretrain(
            config, run.directory, data.pool, data.evaluation, run.runtime, init
        )
    _print_outcome(result.metrics, run.directory)


def finetune(args: argparse.Namespace) -> None:
    from simclrv2.export import load_exported
    from simclrv2.stages import finetune as stage

    config = _config(args)
    inputs = _inputs(args, init=args.init, labels=args.labels)
    data = _run_data(config)
    inputs["labels"] = inputs.get("labels") or data.default_labels
    labelled = _labelled(inputs["labels"], data, config.finetune.label_seed)
    init = load_exported(inputs["init"]) if inputs.get("init") else None
    with _run(args, config, "finetune" if init else "supervised", data, inputs) as run:
        result = stage.finetune(config, run.directory, labelled, data.evaluation, run.runtime, init)
    _print_outcome(result.metrics, run.directory)


def distill(args: argparse.Namespace) -> None:
    from simclrv2.export import load_exported
    from simclrv2.stages import distill as stage

    config = _config(args)
    inputs = _inputs(args, teacher=args.teacher, labels=args.labels)
    if not inputs.get("teacher"):
        raise UserError("distill needs --teacher MODEL: a fine-tuned model's directory")
    data = _run_data(config)
    labels = inputs.get("labels")
    labelled = _labelled(labels, data, config.finetune.label_seed) if labels else None
    teacher = load_exported(inputs["teacher"]).classifier_model()
    with _run(args, config, "distill", data, inputs) as run:
        result = stage.distill(
            config, run.directory, data.pool, labelled, data.evaluation, run.runtime, teacher
        )
    _print_outcome(result.metrics, run.directory)


def evaluate(args: argparse.Namespace) -> None:
    from simclrv2.export import load_exported
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages.evaluate import knn_eval, linear_eval

    setup_logging(None)
    config = _config(args)
    exported = load_exported(args.init)
    data = _run_data(config)
    evaluate = linear_eval if args.command == "linear" else knn_eval
    runtime = resolve_runtime(config.runtime)
    results = evaluate(config, exported, data.labelled(), data.evaluation, runtime)
    print(_headline(results))


def embed(args: argparse.Namespace) -> None:
    from simclrv2 import build
    from simclrv2.export import load_exported
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages import embed as stage

    setup_logging(None)
    config = _config(args)
    exported = load_exported(args.init)
    data = build.dataset(config.data, args.split)
    out = stage.embed(exported, data, resolve_runtime(config.runtime), Path(args.out))
    print(f"{len(data)} embeddings of dimension {exported.encoder.out_dim}: {out}")


def show_augmentations(args: argparse.Namespace) -> None:
    import torch

    from simclrv2 import build
    from simclrv2.visualize import augmentation_grid

    config = _config(args)
    data = build.dataset(config.data, args.split)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(data), generator=generator)[: args.images]
    augment = build.pretrain_augment(config.augment, args.size or data.image_size)
    images, _, extents = data.rows(chosen)
    augmentation_grid(images, augment, args.views, generator, extents=extents).save(args.out)
    print(f"{len(chosen)} images x {args.views} views: {args.out}\n{augment}")


def neighbours(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from simclrv2 import build, curation
    from simclrv2.export import load_exported
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime

    setup_logging(None)
    if args.against and not args.duplicates:
        raise UserError("--against compares two sources for duplicates; add --duplicates")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for the CSV and the PNG")
    config = _config(args)
    exported = load_exported(args.model)
    data = build.dataset(config.data, args.split)
    runtime = resolve_runtime(config.runtime)
    if args.duplicates:
        against = None
        if args.against:
            settings = replace(config.data, source=args.against, image_size=data.image_size)
            against = build.dataset(settings, args.against_split)
        threshold = curation.DUPLICATE_THRESHOLD if args.threshold is None else args.threshold
        table, picture, count = curation.duplicates(
            exported, data, runtime, args.out, threshold, args.k, against
        )
        print(f"{count} pairs at a cosine of {threshold} or more: {table}")
        if picture is not None:
            print(f"picture of the first {min(count, curation.ROWS_SHOWN)} pairs: {picture}")
        return
    channels = exported.encoder.spec.in_channels
    queries = curation.read_queries(args.query, data.image_size, channels)
    table, picture = curation.neighbours(exported, data, queries, runtime, args.k, args.out)
    print(f"the {args.k} nearest images to each of {len(queries)} queries: {table}")
    print(f"picture of the first {min(len(queries), curation.ROWS_SHOWN)} queries: {picture}")


def suggest_labels(args: argparse.Namespace) -> None:
    import torch

    from simclrv2 import build, curation
    from simclrv2.data import indices_from_file
    from simclrv2.export import load_exported
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime

    setup_logging(None)
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; give the name of the file list to write")
    config = _config(args)
    exported = load_exported(args.model)
    pool = build.dataset(config.data, args.split)
    labelled = torch.empty(0, dtype=torch.int64)
    if args.already_labelled:
        if not Path(args.already_labelled).is_file():
            raise UserError(
                f"--labelled {args.already_labelled} is not a file; give an index file or a list "
                "of file names"
            )
        labelled = indices_from_file(pool, args.already_labelled)
    runtime = resolve_runtime(config.runtime)
    picks = curation.suggest_labels(
        exported, pool, runtime, args.n, labelled, args.seed, args.method
    )
    comment = (
        f"simclrv2 suggest-labels --method {args.method} --model {args.model} --seed {args.seed}: "
        f"{len(picks)} of {len(pool)} images, {len(labelled)} already labelled"
    )
    curation.save_suggestions(args.out, pool, picks, comment)
    print(f"{len(picks)} images to label next ({args.method}): {args.out}")


def report(args: argparse.Namespace) -> None:
    from simclrv2.report import build_report

    print(f"report: {build_report(args.run_dir)}")


def export(args: argparse.Namespace) -> None:
    from simclrv2.deploy import export, final_model
    from simclrv2.export import load_exported

    directory, what = final_model(args.model)
    deployed = export(load_exported(directory), args.format, args.out, args.part)
    print(f"model: {directory} ({what})")
    print(f"wrote {deployed.path}: its {deployed.contract['part']} as {deployed.format}")
    print("\n".join(f"  {line}" for line in deployed.summary()))


def predict(args: argparse.Namespace) -> None:
    from simclrv2 import build
    from simclrv2.deploy import final_model
    from simclrv2.export import load_exported
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages import predict as stage

    setup_logging(None)
    directory, what = final_model(args.model)
    exported = load_exported(directory)
    side, _ = exported.input_side()
    config = _config(args, {"data.image_size": side})
    data = build.dataset(config.data, args.split)
    out = stage.predict(exported, data, resolve_runtime(config.runtime), Path(args.out), args.top_k)
    print(f"model: {directory} ({what})")
    print(f"{len(data) + len(data.skipped)} predictions ({len(data.skipped)} undecodable): {out}")


def convert_tf(args: argparse.Namespace) -> None:
    from simclrv2.convert.tf_simclr import convert

    plan = convert(args.source, args.out, args.head_input, args.ema, args.overwrite)
    print(f"converted {args.source} -> {args.out}")
    print("\n".join(f"  {line}" for line in plan.summary()))
