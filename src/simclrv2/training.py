"""The life of a training stage, so that each stage holds only what is its own: open it
(:meth:`Stage.open`), build its networks and ``step``, :func:`fit`, evaluate, then
:meth:`Stage.finish` (export, ``results.json``, a log line) hands back a :class:`StageResult`.

:func:`fit` runs epochs of batches: the learning rate from the schedule at every optimiser step,
the stage's ``step`` (forward and loss, under autocast), backward and the optimiser, a progress bar,
metrics, checkpoints every ``checkpoint_every`` steps and at each epoch end, and exact resume:
modules, optimiser, schedule position, the augmentation generator and the position inside the epoch
(the data order is a function of the seed and the epoch). A checkpoint is a snapshot in host
memory that rank 0 writes on a background thread while training goes on; the next checkpoint,
the end of training and a stop wait for it, and a failed write raises there. SIGTERM or SIGINT
finish the current step, write a checkpoint and raise :class:`Interrupted`. A non-finite loss stops the run with the
step and the likely cause, and the last good checkpoint stays in place.

A step reads nothing back to the host, which would leave a GPU idle until it caught up: the
loss's finiteness is recorded on the device and read when metrics are logged (every
:data:`LOG_EVERY` steps and at an epoch's end) and before every checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from simclrv2 import distributed
from simclrv2.atomic import write_text
from simclrv2.checkpoint import (
    BackgroundWriter,
    checkpoints,
    host_copy,
    load_latest,
    save_checkpoint,
    space_needed,
)
from simclrv2.config import Config
from simclrv2.data import Batch, ImageDataset, batches_per_epoch, epoch_batches
from simclrv2.errors import Interrupted, UserError, first_line
from simclrv2.export import ExportedModel, load_exported, save_exported
from simclrv2.metrics import LOG, MetricsWriter, progress_bar
from simclrv2.optim import WarmupCosine, set_learning_rate
from simclrv2.rundir import check_writable
from simclrv2.runtime import Runtime
from simclrv2.stop_signal import StopSignal

RESULTS = "results.json"  # a finished stage's metrics; its presence marks the stage done
StepFn = Callable[[Batch, torch.Generator], dict[str, Tensor]]
LOG_EVERY = 10  # optimiser steps between metric rows
NEVER = torch.iinfo(torch.int64).max  # the step of a loss record while every loss was finite


@dataclass
class Position:
    """Where training is: epochs done, batches done in the current epoch, optimiser steps done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


@dataclass
class StageResult:
    """What a finished stage hands on: its exported model and its metrics (``results.json``)."""

    exported: ExportedModel
    metrics: dict


@dataclass
class Stage:
    """One stage's folder, the services its loop needs, and the clock of this invocation."""

    name: str
    directory: Path
    runtime: Runtime
    metrics: MetricsWriter
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, name: str, directory: Path, runtime: Runtime, seed: int) -> Stage:
        """The stage's folder and metrics. Seeds torch's global generator, so that the networks
        the stage builds next start from the same weights on every run (and process) with this
        seed."""
        torch.manual_seed(seed)
        directory.mkdir(parents=True, exist_ok=True)
        writer = MetricsWriter(directory / "metrics.csv", name, enabled=distributed.rank() == 0)
        return cls(name, directory, runtime, writer)

    @property
    def checkpoints(self) -> Path:
        return self.directory / "checkpoints"

    def finish(
        self, exported: ExportedModel, metrics: dict, summary: str, config: Config
    ) -> StageResult:
        """Rank 0 writes ``model/`` (its card shows the scores of each split in ``metrics``, see
        :func:`simclrv2.scores.by_split`, and ``config``) and ``results.json`` (``metrics`` plus
        the seconds of this invocation: a resumed run counts its own part); every process
        returns once they are there, with the result. ``summary`` is the stage's log line."""
        evaluated = metrics.get("splits")
        metrics = metrics | {"seconds": time.perf_counter() - self.started}
        if distributed.rank() == 0:
            save_exported(
                exported,
                self.directory / "model",
                overwrite=True,
                metrics=evaluated,
                config=config.to_yaml(),
            )
            write_text(self.directory / RESULTS, json.dumps(metrics, indent=2) + "\n")
        distributed.barrier()
        LOG.info("%s: %s", self.name, summary)
        return StageResult(exported, metrics)


def data_info(config: Config, trained_on: ImageDataset, splits: dict[str, dict]) -> dict:
    """The ``data`` entry of a stage's export info, for its model card: the sources, the image
    side in px the network was trained at, and what each split held
    (:meth:`ImageDataset.describe`)."""
    data = config.data
    if data.own_images:
        sources = {"labelled": data.labelled, "unlabelled": data.unlabelled}
    else:
        sources = {"source": data.source or "embedded"}
    if data.test is not None:
        sources["test"] = data.test
    return sources | {"image_size": trained_on.image_size, "splits": splits}


def finished_result(directory: Path) -> StageResult | None:
    """The result of the stage that finished in ``directory`` (from its files), else None."""
    path = directory / RESULTS
    if not path.exists():
        return None
    return StageResult(load_exported(directory / "model"), json.loads(path.read_text()))


def _random_streams(generator: torch.Generator) -> dict[str, Tensor]:
    """The random streams a checkpoint saves: augmentation, torch's global CPU one, and the CUDA
    one of the training device (the augmentation generator's)."""
    state = {"augment": generator.get_state(), "torch": torch.get_rng_state()}
    if generator.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(generator.device)
    return state


def _restore_random_streams(states: list[dict[str, Tensor]], generator: torch.Generator) -> None:
    """This process's streams from every process's (``states[rank]``). A process the saved run did
    not have keeps its fresh streams: the run goes on, no longer bit-exact (its data shards moved
    anyway)."""
    if distributed.rank() >= len(states):
        LOG.warning("the checkpoint has no random state for process %d", distributed.rank())
        return
    # set_state takes CPU byte tensors; a checkpoint loaded onto the GPU holds CUDA ones
    state = {name: value.cpu() for name, value in states[distributed.rank()].items()}
    generator.set_state(state["augment"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and generator.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], generator.device)


def _first_non_finite(modules: dict[str, nn.Module]) -> str | None:
    """The name of the first parameter or buffer holding a NaN or an infinity, if any."""
    for name, module in modules.items():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                return f"{name}.{key}"
    return None


class _LossRecord:
    """The first optimiser step (counting from 1) whose loss was not finite, and that loss, kept on
    the device: :meth:`update` reads nothing back, :meth:`read` does."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), NEVER, device=device)  # int64; NEVER while every loss is finite
        self.loss = torch.zeros((), device=device)

    def update(self, step: int, loss: Tensor) -> None:
        first = ~torch.isfinite(loss) & (self.step == NEVER)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.float(), self.loss)

    def read(self) -> tuple[int, float] | None:
        """(step, loss) of the earliest non-finite loss on any process, else None. A host read,
        and collectives under several processes: every process calls it at the same steps."""
        step = int(distributed.min_over_processes(self.step))
        if step == NEVER:
            return None
        every = distributed.all_gather_objects((int(self.step), float(self.loss)))
        return step, next(loss for at, loss in every if at == step)


def _diverged(stage: Stage, what: str, step: int, lr: float, batch_size: int) -> UserError:
    """The error that stops a diverged run: what went non-finite, the step, the likely cause and the
    checkpoint kept."""
    kept = checkpoints(stage.checkpoints)
    last = f"the last good checkpoint, {kept[-1].name}, is kept" if kept else "no checkpoint yet"
    return UserError(
        f"{stage.name}: {what} at step {step} (lr {lr:.3g}); the learning rate is likely too high "
        f"for batch size {batch_size}: lower {stage.name}.base_lr ({last} in {stage.checkpoints})"
    )


def fit(
    stage: Stage,
    step_fn: StepFn,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    schedule: WarmupCosine,
    data: ImageDataset,
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    end_of_epoch: Callable[[int], dict[str, float]] | None = None,
    checkpoint_every: int = 0,
    drop_last: bool = True,
) -> Position:
    """Train ``modules`` with ``step_fn`` (a :class:`~simclrv2.data.Batch` on the device, the
    generator -> metrics
    with the run's differentiable ``loss``, the one the bar shows, and optionally an ``objective``
    to differentiate in its place, e.g. ``loss`` plus a monitor's own loss) for ``epochs``,
    resuming from the stage's latest checkpoint.
    ``drop_last=False`` trains on every image each epoch, the last batch short (the schedule must
    count the same batches: :func:`simclrv2.build.optimizer_and_schedule`).

    A non-finite loss is seen at the next metric row or checkpoint (module docstring), so the
    optimiser may have taken up to ``LOG_EVERY - 1`` more steps with non-finite weights by then;
    no checkpoint ever holds them, and the error names the first step whose loss was not finite.
    A stop signal ends the run after the step it arrives in, and under several processes at the
    next metric row or checkpoint, where every process reads the others' flags at the same step.
    """
    runtime, is_main = stage.runtime, distributed.rank() == 0
    generator = runtime.generator(seed + 1000 * distributed.rank())  # per-rank augmentation stream
    position = Position()
    saved = load_latest(stage.checkpoints, map_location=runtime.device)
    if saved is not None:
        try:
            for name, module in modules.items():
                module.load_state_dict(saved["modules"][name])
            optimizer.load_state_dict(saved["optimizer"])
            _restore_random_streams(saved["rng"], generator)
            position = Position(**saved["position"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise UserError(
                f"{stage.checkpoints}: the newest checkpoint does not fit this {stage.name} model "
                f"({type(error).__name__}: {first_line(error)}); it was written by another "
                "configuration"
            ) from None
        LOG.info(
            "%s: resumed at epoch %d, batch %d, step %d",
            stage.name,
            position.epoch,
            position.batch,
            position.step,
        )
    distributed.broadcast_state(modules.values())  # every process starts from rank 0's state
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    loss_record = _LossRecord(runtime.device)

    writer = BackgroundWriter()  # rank 0's checkpoints, written while training goes on

    def stop_if_diverged() -> None:
        """Raise the divergence error if any loss so far was not finite (a host read)."""
        found = loss_record.read()
        if found is not None:
            writer.wait()  # the error names the newest checkpoint on disk
            step, loss = found
            raise _diverged(stage, f"the loss became {loss}", step, schedule(step - 1), batch_size)

    def checkpoint() -> None:
        writer.wait()  # one snapshot in host memory at a time; a failed write raises here
        stop_if_diverged()
        broken = _first_non_finite(modules)
        if broken is not None:  # never replace the last good checkpoint with these weights
            lr = schedule(max(position.step - 1, 0))
            raise _diverged(stage, f"{broken} became non-finite", position.step, lr, batch_size)
        rng = distributed.all_gather_objects(_random_streams(generator))  # every process's streams
        if is_main:
            state = {
                "modules": {name: module.state_dict() for name, module in modules.items()},
                "optimizer": optimizer.state_dict(),
                "rng": rng,
                "position": asdict(position),
            }
            writer.submit(save_checkpoint, stage.checkpoints, position.step, host_copy(state))
        if distributed.is_distributed():
            torch.distributed.barrier()

    def interrupted() -> Interrupted:
        """The stop, once the checkpoint just started is on disk."""
        writer.wait()
        return Interrupted(stage.directory, position.step)

    steps_per_epoch = batches_per_epoch(
        len(data), batch_size, drop_last=drop_last, world_size=distributed.world_size()
    )
    for module in modules.values():
        module.train()
    if is_main:  # a full disk is reported now, not at the first checkpoint
        check_writable(stage.checkpoints, space_needed(stage.checkpoints, modules.values()))
    bar = progress_bar(epochs * steps_per_epoch, position.step, stage.name, enabled=is_main)
    # however training ends, the bar is closed and the last checkpoint write waited for
    with bar, StopSignal() as stop, writer:
        while position.epoch < epochs:
            batches = epoch_batches(
                data,
                batch_size,
                seed=seed,
                epoch=position.epoch,
                start_batch=position.batch,
                drop_last=drop_last,
                rank=distributed.rank(),
                world_size=distributed.world_size(),
                device=runtime.device,
            )
            # images_per_s is timed from the epoch's start, the last row or the last checkpoint
            since = time.perf_counter(), position.step
            with closing(batches):  # the loader's thread stops however the epoch ends
                for batch in batches:
                    lr = schedule(position.step)
                    set_learning_rate(optimizer, lr)
                    with runtime.autocast():
                        values = step_fn(batch, generator)
                    objective = values.pop("objective", values["loss"])
                    loss_record.update(position.step + 1, objective.detach())
                    optimizer.zero_grad(set_to_none=True)
                    objective.backward()
                    distributed.average_gradients(parameters)
                    optimizer.step()
                    position.step += 1
                    position.batch += 1
                    logged = position.step % LOG_EVERY == 0 or position.batch == steps_per_epoch
                    due = (
                        checkpoint_every > 0
                        and position.step % checkpoint_every == 0
                        and position.batch < steps_per_epoch  # the epoch's end writes one below
                    )
                    if logged:
                        stop_if_diverged()
                        averaged = distributed.mean_over_processes(values)  # the global batch's
                        scalars = {k: v.item() for k, v in averaged.items()}  # the device caught up
                        now = time.perf_counter()
                        rate = batch_size * (position.step - since[1]) / (now - since[0])
                        since = now, position.step
                        scalars |= {"lr": lr, "images_per_s": rate}
                        stage.metrics.write(
                            position.step,
                            position.epoch + position.batch / steps_per_epoch,
                            scalars,
                        )
                        bar.set_postfix(
                            loss=f"{scalars['loss']:.4f}",
                            lr=f"{lr:.3g}",
                            img_s=f"{rate:.0f}",
                            refresh=False,
                        )
                    bar.update(1)
                    # the stop flag: a Python bool in one process; under several an all-reduce, made
                    # only at the steps where every process reads anyway (all reach the same ones)
                    polled = logged or due or distributed.world_size() == 1
                    if polled and distributed.any_process(stop.requested):
                        checkpoint()
                        raise interrupted()
                    if due:
                        checkpoint()
                        since = time.perf_counter(), position.step
            position.epoch += 1
            position.batch = 0
            if end_of_epoch is not None:
                epoch_values = end_of_epoch(position.epoch)
                for module in modules.values():
                    module.train()
                if epoch_values:
                    stage.metrics.write(position.step, position.epoch, epoch_values)
                    LOG.info(
                        "%s epoch %d: %s",
                        stage.name,
                        position.epoch,
                        ", ".join(f"{k} {v:.4g}" for k, v in epoch_values.items()),
                    )
            checkpoint()
            if distributed.any_process(stop.requested):  # it came during the epoch-end monitors
                raise interrupted()
    return position
