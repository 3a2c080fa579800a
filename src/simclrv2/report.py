"""``simclrv2 report RUN_DIR``: one HTML page with PNG plots of a run, for a person to look at.

It shows a pipeline's headline (top-1 against the number of labelled images), the results
table, loss (the online classifier's apart) and learning-rate curves of every stage, kNN and
linear accuracy over the epochs (the kNN monitor and the online linear classifier at the epochs
they ran, and the final linear evaluation), a 2-D map (PCA) of the reported split's embeddings
coloured by class, the confusion matrix of each classifier, and an augmentation grid. It renders
whatever the directory holds, so it works on an interrupted run too: the table then lists the
stages that finished, the embedding map uses the newest pretraining checkpoint when there is no
exported model yet, and missing parts are named, not fatal.
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from simclrv2.errors import UserError
from simclrv2.metrics import read_metrics
from simclrv2.scores import TEST, headline
from simclrv2.tables import format_table

FIGURES = "report"
CURVES = ("loss", "distill_loss", "label_loss")  # the run's loss and the parts of distillation's
APART = ("online_loss",)  # a monitor's loss, trained alongside: its own panel
ACCURACIES = ("knn_top1", "online_linear_top1")


def labels_count(labels: str) -> int | None:
    """The number of labelled images a table row's ``labels`` names ("10% (20)" -> 20)."""
    found = re.search(r"\((\d+)\)\s*$", labels)
    return int(found.group(1)) if found else None


def plot_label_efficiency(
    curves: dict[str, dict[int, list[float]]], path: Path, split: str, title: str = ""
) -> str:
    """Top-1 (%) on ``split`` against the number of labelled images (log axis), one line per
    method of ``curves`` (method -> labelled images -> the top-1 of each seed): the mean, and
    the min-max band where there are several seeds; a method at one count is a marker."""
    figure = Figure(figsize=(6.5, 4.2))
    axis = figure.subplots()
    for method, points in curves.items():
        counts = sorted(points)
        values = [points[c] for c in counts]
        means = [sum(v) / len(v) for v in values]
        style = {"marker": "o"} if len(counts) > 1 else {"marker": "*", "markersize": 12}
        (line,) = axis.plot(counts, means, label=method, **style)
        if any(len(v) > 1 for v in values):
            low, high = [min(v) for v in values], [max(v) for v in values]
            axis.fill_between(counts, low, high, color=line.get_color(), alpha=0.2)
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(ScalarFormatter())  # 10, 100, not 10^1, 10^2
    axis.set(
        xlabel="labelled images",
        ylabel=f"top-1 on {split} (%)",
        title=title or "accuracy against labels",
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def label_efficiency_curves(rows: list[dict]) -> tuple[str, dict[str, dict[int, list[float]]]]:
    """From a pipeline's table rows: the split they report (test when there is one) and, per
    method, its top-1 there at each number of labelled images (the kNN monitor left out)."""
    splits = {row.get("split") for row in rows}
    split = TEST if TEST in splits else rows[0].get("split")
    curves: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for row in rows:
        count = labels_count(str(row.get("labels", "")))
        method = str(row.get("method", ""))
        if row.get("split") != split or count is None or row.get("top1") is None:
            continue
        if not method.startswith("SimCLR + kNN"):
            curves[method][count] = [row["top1"]]
    return split, dict(curves)


def _label_efficiency(run: Path, out: Path) -> str | None:
    """The headline of a pipeline run: top-1 against labelled images (fine-tuned, supervised,
    distilled at each label spec; linear eval at all labels)."""
    rows = _read_json(run / "results.json")
    if not isinstance(rows, list) or not rows:
        return None
    split, curves = label_efficiency_curves(rows)
    return plot_label_efficiency(curves, out / "label-efficiency.png", split) if curves else None


def _stage_dirs(run: Path) -> list[Path]:
    """The run itself if it is a single stage, else its stage folders, in the order they ran."""
    if (run / "metrics.csv").exists():
        return [run]
    stages = [d for d in run.iterdir() if d.is_dir() and (d / "metrics.csv").exists()]
    return sorted(stages, key=lambda d: (d / "metrics.csv").stat().st_mtime)


def _save(figure: Figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path.name


def _curves(stage: Path, rows: list[dict], out: Path) -> str | None:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        series[row["name"]].append((row["step"], row["value"]))
    losses = [name for name in CURVES if name in series]
    apart = [name for name in APART if name in series]
    if not losses:
        return None
    figure = Figure(figsize=(5 * (2 + len(apart)), 3.2))
    left, *middle, right = figure.subplots(1, 2 + len(apart))
    for axis, names in ((left, losses), *((a, [n]) for a, n in zip(middle, apart))):
        for name in names:
            steps, values = zip(*sorted(series[name]))
            axis.plot(steps, values, label=name)
        axis.set(xlabel="step", ylabel="loss", title=f"{stage.name}: {', '.join(names)}")
        axis.legend(fontsize=8)
    if "lr" in series:
        steps, values = zip(*sorted(series["lr"]))
        right.plot(steps, values, color="tab:green")
    right.set(xlabel="step", ylabel="learning rate", title=f"{stage.name}: learning rate")
    return _save(figure, out / f"{stage.name}-curves.png")


def _accuracy_over_epochs(stage: Path, rows: list[dict], out: Path) -> str | None:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row["name"] in ACCURACIES:
            series[row["name"]].append((row["epoch"], row["value"]))
    if not series:
        return None
    figure = Figure(figsize=(5, 3.2))
    axis = figure.subplots()
    for name, points in series.items():
        epochs, values = zip(*sorted(points))
        axis.plot(epochs, values, marker="o", label=name.replace("_top1", " top-1"))
    linear = _read_json(stage.parent / "linear" / "results.json")
    if stage.name == "pretrain" and isinstance(linear, dict) and "top1" in linear:
        last = max(row["epoch"] for row in rows)
        axis.plot(
            [last],
            [linear["top1"]],
            marker="*",
            markersize=12,
            linestyle="none",
            label=f"linear eval ({linear.get('method', '')}) top-1",
        )
    axis.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{stage.name}: monitors")
    axis.legend(fontsize=8)
    return _save(figure, out / f"{stage.name}-accuracy.png")


def _read_json(path: Path) -> object:
    """The JSON value in ``path``, or None if the file is missing or unreadable (a run being
    written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _confusion(stage: Path, out: Path) -> str | None:
    """The confusion matrix of the split a stage reports, rows normalised, axes named by class."""
    results = _read_json(stage / "results.json")
    if not isinstance(results, dict) or "confusion" not in results:
        return None
    matrix = torch.tensor(results["confusion"], dtype=torch.float32)
    normalised = matrix / matrix.sum(1, keepdim=True).clamp_min(1)
    names = list(results.get("per_class") or [])
    figure = Figure(figsize=(4.2 + 0.15 * len(names), 3.8 + 0.15 * len(names)))
    axis = figure.subplots()
    image = axis.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)
    split = results.get("split", "test")
    axis.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"{stage.name}: top-1 {results['top1']:.1f}% on {split}",
    )
    if len(names) == len(matrix):
        ticks = range(len(names))
        axis.set_xticks(ticks, names, rotation=90, fontsize=7)
        axis.set_yticks(ticks, names, fontsize=7)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return _save(figure, out / f"{stage.name}-confusion.png")


def _per_class_table(stage: Path) -> str:
    """Precision, recall, F1 and support per class on the split a stage reports, as HTML."""
    results = _read_json(stage / "results.json")
    per_class = results.get("per_class") if isinstance(results, dict) else None
    if not isinstance(per_class, dict):
        return ""
    rows = [{"class": name, **scores} for name, scores in per_class.items()]
    split = html.escape(str(results.get("split", "")))
    return f"<p>per class on {split}:</p><pre>{html.escape(format_table(rows))}</pre>"


def _pretrained_encoder(run: Path, config, data) -> tuple[torch.nn.Module, str] | None:
    """The pretrained encoder of a run and where it came from: the exported model of a finished
    pretraining, else the newest checkpoint of an interrupted one, else None."""
    from simclrv2 import build
    from simclrv2.checkpoint import load_latest
    from simclrv2.export import load_exported

    stages = [d for d in (run / "pretrain", run) if d.is_dir()]
    for stage in stages:
        if (stage / "model" / "model.json").exists():
            return load_exported(stage / "model").encoder, "exported model"
    for stage in stages:
        state = load_latest(stage / "checkpoints")
        if state is not None and "model" in state.get("modules", {}):
            encoder = build.encoder(config.model, config.model.arch, data)
            prefix = "encoder."
            weights = {
                k[len(prefix) :]: v
                for k, v in state["modules"]["model"].items()
                if k.startswith(prefix)
            }
            encoder.load_state_dict(weights)
            return encoder, f"checkpoint of step {state['position']['step']} (interrupted run)"
    return None


def _embedding_map(run: Path, out: Path) -> str | None:
    """PCA of h on the images of the split the run reports (test, else validation), coloured by
    class, from the pretrained encoder."""
    from simclrv2.evaluation import extract
    from simclrv2.run_data import load_run_data
    from simclrv2.rundir import load_run_config
    from simclrv2.runtime import resolve_runtime
    from simclrv2.scores import reported_split

    config = load_run_config(run)
    evaluation = load_run_data(config.data, with_pools=False).evaluation
    if not evaluation:
        return None
    split = reported_split(evaluation)
    test = evaluation[split]
    found = _pretrained_encoder(run, config, test)
    if found is None:
        return None
    encoder, source = found
    test = test.subset(torch.arange(min(len(test), 2000)))
    runtime = resolve_runtime(config.runtime)
    features, labels = extract(runtime.module(encoder).eval(), test, runtime, test.image_size)
    centred = features - features.mean(0)
    _, _, components = torch.pca_lowrank(centred, q=2, center=False)
    points = centred @ components[:, :2]
    figure = Figure(figsize=(5.5, 4.5))
    axis = figure.subplots()
    scatter = axis.scatter(
        points[:, 0].numpy(), points[:, 1].numpy(), c=labels.numpy(), cmap="tab10", s=4
    )
    names = test.classes or [str(c) for c in range(int(labels.max()) + 1)]
    axis.legend(scatter.legend_elements()[0], names, fontsize=7, loc="best", markerscale=0.8)
    axis.set(title=f"{split} embeddings h (PCA), {source}", xticks=[], yticks=[])
    return _save(figure, out / "embeddings.png")


def _augmentations(run: Path, out: Path) -> str | None:
    from simclrv2 import build
    from simclrv2.run_data import load_run_data
    from simclrv2.rundir import load_run_config
    from simclrv2.visualize import augmentation_grid

    config = load_run_config(run)
    data = load_run_data(config.data, with_pools=False).pool
    augment = build.pretrain_augment(config.augment, data.image_size)
    images, _, extents = data.rows(torch.arange(min(8, len(data))))
    grid = augmentation_grid(images, augment, 6, torch.Generator().manual_seed(0), extents=extents)
    grid.save(out / "augmentations.png")
    return "augmentations.png"


def _finished_stages(run: Path) -> list[dict]:
    """One row per stage folder that holds its results: the table of a run that has not finished."""
    finished = sorted(run.glob("*/results.json"), key=lambda path: path.stat().st_mtime)
    rows = []
    for path in finished:
        results, stage = _read_json(path), path.parent
        if not isinstance(results, dict):
            continue
        kind = "knn_" if "top1" not in results and "knn_top1" in results else ""
        seconds = results.get("seconds")
        rows.append(
            {
                "stage": stage.name + (" (kNN)" if kind else ""),
                "split": results.get("split"),
                "top1": results.get(f"{kind}top1"),
                "top5": results.get(f"{kind}top5"),
                "minutes": seconds / 60 if isinstance(seconds, (int, float)) else None,
            }
        )
    return rows


def _results_table(run: Path) -> str:
    rows = _read_json(run / "results.json")
    if isinstance(rows, dict):  # a single stage's results
        rows = [headline(rows)]
    if isinstance(rows, list) and rows:
        return f"<pre>{html.escape(format_table(rows))}</pre>"
    finished = _finished_stages(run)
    if not finished:
        return "<p>No results yet: no stage of this run has finished.</p>"
    return (
        "<p>The run has not finished; the stages that have:</p>"
        f"<pre>{html.escape(format_table(finished))}</pre>"
    )


def build_report(run: str | Path) -> Path:
    """Write ``RUN/report.html`` (and ``RUN/report/*.png``); returns the HTML path."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run} is not a directory; give a run directory (runs/...)")
    stages = _stage_dirs(run)
    if not stages and not (run / "config.yaml").exists():
        raise UserError(
            f"{run} holds no run (no config.yaml and no metrics.csv); give the directory a run wrote"
        )
    out = run / FIGURES
    out.mkdir(exist_ok=True)
    curve = _label_efficiency(run, out)
    sections = [f'<h2>Accuracy against labels</h2><img src="{FIGURES}/{curve}">'] if curve else []
    sections.append(f"<h2>Results</h2>{_results_table(run)}")
    for stage in stages:
        rows = read_metrics(stage / "metrics.csv")
        figures = [
            _curves(stage, rows, out),
            _accuracy_over_epochs(stage, rows, out),
            _confusion(stage, out),
        ]
        images = "".join(f'<img src="{FIGURES}/{name}">' for name in figures if name)
        body = (images or "<p>no metrics yet</p>") + _per_class_table(stage)
        sections.append(f"<h2>{html.escape(stage.name)}</h2>{body}")
    for title, render in (("Embeddings", _embedding_map), ("Augmentations", _augmentations)):
        try:
            name = render(run, out)
        except UserError as error:
            name, note = None, str(error)
        else:
            note = "not available for this run (no pretrained model yet)"
        sections.append(
            f"<h2>{title}</h2>"
            + (f'<img src="{FIGURES}/{name}">' if name else f"<p>{html.escape(note)}</p>")
        )
    config = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    environment = (
        (run / "environment.json").read_text() if (run / "environment.json").exists() else ""
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>simclrv2 report: {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
img{{max-width:100%;margin:4px}} pre{{background:#f6f6f6;padding:8px;overflow-x:auto}}</style></head>
<body><h1>simclrv2 run {html.escape(run.name)}</h1>
{"".join(sections)}
<h2>Configuration</h2><pre>{html.escape(config)}</pre>
<h2>Environment</h2><pre>{html.escape(environment)}</pre>
</body></html>
"""
    path = run / "report.html"
    path.write_text(page)
    return path
