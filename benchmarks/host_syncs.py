"""Host reads in SimCLR pretraining steps, counted on the CPU: every call that makes the host wait
for a device's values. On a GPU each one leaves the device idle until the host has the value and
queues more work, so a step should make none.

The run is the library's own pretraining stage (``simclrv2.stages.pretrain.pretrain``): random
32 px RGB images, half of them labelled (so the online classifier trains), ResNet-18 at 1/8 width
with its projection head, the ImageNet augmentation recipe, NT-Xent, LARS, batch 32, one epoch of
20 steps: metric rows at steps 10 and 20, then the epoch's checkpoint (no memory queue, no
gradient caching: their defaults). While ``training.fit`` runs, these are replaced by counting
wrappers:

- reads: ``Tensor.item``, ``tolist``, ``__bool__``, ``__int__``, ``__float__``, ``__index__``,
  ``cpu``, ``numpy``, ``nonzero`` and ``torch.nonzero``, and ``__getitem__`` / ``__setitem__``
  with a boolean tensor index (the result's size depends on the values);
- copies from the host: ``torch.tensor`` and ``torch.as_tensor`` given a device, and
  ``Tensor.new_tensor``; on a GPU each is a copy the host waits for.

Wrapping the methods rather than using a ``TorchFunctionMode``: a mode is off while the function
it intercepted runs, so it misses what runs inside ``loss.backward()`` (custom autograd
functions) and inside torch's Python code. Each call is attributed to the innermost function of
``simclrv2`` on the stack and to the step it falls in (a step begins where ``fit`` sets its
learning rate; the last step's column includes the epoch's end and its checkpoint).

The stage runs twice: with the views rendered as on the CPU (each op on the images that take it)
and as on a GPU (each op on the whole batch, blended: ``SimCLRAugment.apply(subset=False)``).
Sources without that argument render the views one way on every device, so both runs count the
same there.

Run (any checkout's sources, e.g. an older commit's, with PYTHONPATH)::

    python benchmarks/host_syncs.py
"""

from __future__ import annotations

import functools
import inspect
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

import simclrv2
from simclrv2 import training
from simclrv2.augment import SimCLRAugment
from simclrv2.config import Config, RuntimeConfig
from simclrv2.data import ImageDataset
from simclrv2.runtime import resolve_runtime
from simclrv2.stages import pretrain as pretrain_stage

STEPS, BATCH, SIZE = 20, 32, 32
ARCH = "r18_0.125x_sk0"
PACKAGE = str(Path(simclrv2.__file__).parent)
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")


def _boolean_index(index: object) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts)


class Counts:
    """Calls counted by (step, where, what); step 0 is before the first step."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[int, str, str]] = Counter()
        self.step = 0
        self.active = False

    def record(self, what: str) -> None:
        frame = sys._getframe(2)
        while frame is not None and not frame.f_code.co_filename.startswith(PACKAGE):
            frame = frame.f_back
        if frame is None:
            where = "(outside simclrv2)"
        else:
            module = frame.f_globals["__name__"].removeprefix("simclrv2.")
            where = f"{module}.{getattr(frame.f_code, 'co_qualname', frame.f_code.co_name)}"
        self.calls[self.step, where, what] += 1

    def wrap(self, what: str, original: Callable, counts: Callable[..., bool] | None) -> Callable:
        """``original``, counting its calls (those for which ``counts(*args, **kwargs)``)."""

        @functools.wraps(original)
        def counted(*args, **kwargs):
            if self.active and (counts is None or counts(*args, **kwargs)):
                self.active = False  # the bookkeeping itself is not counted
                try:
                    self.record(what)
                finally:
                    self.active = True
            return original(*args, **kwargs)

        return counted


@contextmanager
def counting(counts: Counts) -> Iterator[None]:
    """The counting wrappers in place of torch's methods and functions (module docstring)."""
    on_tensor: dict[str, Callable[..., bool] | None] = dict.fromkeys((*READS, "nonzero"))
    on_tensor |= {
        "__getitem__": lambda self, index: _boolean_index(index),
        "__setitem__": lambda self, index, value: _boolean_index(index),
        "new_tensor": None,
    }
    on_torch: dict[str, Callable[..., bool] | None] = {
        "nonzero": None,
        "tensor": lambda *args, **kwargs: kwargs.get("device") is not None,
        "as_tensor": lambda *args, **kwargs: kwargs.get("device") is not None,
    }
    own = {name: torch.Tensor.__dict__.get(name) for name in on_tensor}
    originals = {name: getattr(torch, name) for name in on_torch}
    for name, counts_call in on_tensor.items():
        what = f"Tensor.{name}"
        setattr(torch.Tensor, name, counts.wrap(what, getattr(torch.Tensor, name), counts_call))
    for name, counts_call in on_torch.items():
        setattr(torch, name, counts.wrap(f"torch.{name}", originals[name], counts_call))
    try:
        yield
    finally:
        for name, method in own.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)
        for name, function in originals.items():
            setattr(torch, name, function)


def tiny_pretraining(directory: Path) -> None:
    """The stage of the module docstring, from scratch in ``directory``."""
    generator = torch.Generator().manual_seed(0)
    n = STEPS * BATCH
    images = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    labels = torch.where(torch.arange(n) % 2 == 0, torch.arange(n) % 10, -1)  # half labelled
    train = ImageDataset(images, labels, classes=[str(k) for k in range(10)])
    config = Config()
    config = replace(
        config,
        model=replace(config.model, arch=ARCH),
        pretrain=replace(
            config.pretrain, epochs=1, batch_size=BATCH, checkpoint_every=0, knn_every=0
        ),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )
    pretrain_stage.pretrain(config, directory, train, {}, resolve_runtime(config.runtime))


def count_run(subset: bool) -> Counts:
    """The counts of one tiny pretraining, the views rendered with ``subset`` where the sources
    have the choice."""
    counts = Counts()
    fit, set_learning_rate, apply = pretrain_stage.fit, training.set_learning_rate, None
    if "subset" in inspect.signature(SimCLRAugment.apply).parameters:
        apply = SimCLRAugment.apply
        SimCLRAugment.apply = functools.partialmethod(apply, subset=subset)

    def counted_fit(*args, **kwargs):
        counts.active = True
        try:
            return fit(*args, **kwargs)
        finally:
            counts.active = False

    def next_step(optimizer, lr):  # fit calls it at the start of every step
        counts.step += 1
        set_learning_rate(optimizer, lr)

    pretrain_stage.fit, training.set_learning_rate = counted_fit, next_step
    try:
        with counting(counts), tempfile.TemporaryDirectory() as directory:
            tiny_pretraining(Path(directory))
    finally:
        pretrain_stage.fit, training.set_learning_rate = fit, set_learning_rate
        if apply is not None:
            SimCLRAugment.apply = apply
    return counts


def table(counts: Counts) -> list[str]:
    """One row per (where, what): before the first step, the mean over the steps without a
    metric row, and each step with one."""
    rows_at = [s for s in range(1, STEPS + 1) if s % training.LOG_EVERY == 0 or s == STEPS]
    plain = [s for s in range(1, STEPS + 1) if s not in rows_at]
    keys = sorted({(where, what) for _, where, what in counts.calls})
    columns = ["setup", "plain step (mean)", *(f"step {s} (row)" for s in rows_at[:-1])]
    columns.append(f"step {STEPS} (row, end)")

    def cells(key: tuple[str, str] | None) -> list[float]:
        def at(step: int) -> int:
            if key is None:
                return sum(c for (s, _, _), c in counts.calls.items() if s == step)
            return counts.calls[(step, *key)]

        return [at(0), sum(at(s) for s in plain) / len(plain), *(at(s) for s in rows_at)]

    width = max([len(w) + len(t) + 2 for w, t in keys] + [24])
    lines = [f"{'where':<{width}}" + "".join(f"{c:>20}" for c in columns)]
    for key in [*keys, None]:
        label = "total" if key is None else f"{key[0]}  {key[1]}"
        lines.append(f"{label:<{width}}" + "".join(f"{v:>20.4g}" for v in cells(key)))
    return lines


def main() -> None:
    print(
        f"host reads while training.fit runs: {STEPS} pretraining steps of {ARCH}, batch {BATCH} "
        f"of {SIZE} px RGB (half labelled), CPU, torch {torch.__version__}, simclrv2 from {PACKAGE}"
    )
    for subset, name in ((True, "views as on the CPU"), (False, "views as on a GPU")):
        print(f"\n{name}")
        print("\n".join(table(count_run(subset))))


if __name__ == "__main__":
    main()
