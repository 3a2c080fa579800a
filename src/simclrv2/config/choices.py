"""Why the demo preset holds the values it holds: each setting chosen by a sweep, with the value
of every candidate on the VALIDATION split (1,000 training images held out; the test split is
never read to choose), so that a test holds the preset to them (``tests/test_config.py``).

Each sweep varied one setting against the preset, one seed, from the same pretraining and
teachers (``bash benchmarks/demo_sweeps.sh BASE OUT``; BASE: ``benchmarks/preset_sweep.py
--variant demo``); the tables and their commands are in benchmarks/RESULTS.md, "The demo's
choices on validation". One seed's validation top-1 moves by about ``NOISE`` points at these
label counts, so the rules ask for more than that before they act:

- a rate (or any setting without a cost): the value it had stays unless a candidate's mean is
  higher by more than ``NOISE``;
- a budget (candidates listed cheapest first): the cheapest candidate none of whose numbers is
  more than ``NOISE`` under the best candidate's, so that time is saved only where no
  measurement, the baseline's included, says it costs accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

NOISE = 1.0  # validation top-1 points (percent) a candidate must gain to replace the value


@dataclass(frozen=True)
class Choice:
    """One setting's sweep: ``candidates`` maps each value tried to its validation top-1 per
    entry of ``measured`` (e.g. fine-tuned at 1% and at 10%); ``before`` is the preset's value
    when it was swept; ``budget`` marks a cost, candidates cheapest first (module docstring)."""

    setting: str  # dotted config key, as ``key=value`` overrides name it
    measured: tuple[str, ...]  # what each number is
    candidates: dict[object, tuple[float, ...]]
    before: object
    budget: bool = False

    def score(self, value: object) -> float:
        """The mean validation top-1 of ``value``."""
        numbers = self.candidates[value]
        return sum(numbers) / len(numbers)

    def best(self) -> object:
        """The candidate with the highest score (the first on ties)."""
        return max(self.candidates, key=self.score)

    def chosen(self) -> object:
        """The value the rules pick (module docstring)."""
        best = self.best()
        if self.budget:
            floor = [number - NOISE for number in self.candidates[best]]
            return next(
                value
                for value, numbers in self.candidates.items()
                if all(n >= f for n, f in zip(numbers, floor))
            )
        return best if self.score(best) - self.score(self.before) > NOISE else self.before


FT = ("fine-tuned at 1%", "fine-tuned at 10%")
SCRATCH = ("supervised from scratch at 1%", "supervised from scratch at 10%")
DISTILLED = ("distilled at 1%", "distilled at 10%")
PRETRAINED = ("kNN (k=200) on all labels", "fine-tuned at 1%")  # each from its own pretraining

DEMO: tuple[Choice, ...] = (
    Choice(
        "finetune.base_lr",
        FT,
        {0.025: (71.5, 76.5), 0.05: (70.2, 77.8), 0.1: (67.9, 78.5), 0.2: (68.1, 79.6)},
        before=0.05,
    ),
    Choice(
        "supervised.base_lr",
        SCRATCH,
        {0.4: (65.8, 79.8), 0.8: (65.0, 79.6), 1.6: (66.7, 77.7)},
        before=0.8,
    ),
    Choice(
        "finetune.epochs",  # one budget for both: the baseline trains as long as fine-tuning
        FT + SCRATCH,
        {50: (71.0, 77.3, 64.0, 77.2), 100: (70.2, 77.8, 65.0, 79.6)},
        before=100,
        budget=True,
    ),
    Choice(
        "distill.epochs", DISTILLED, {10: (70.6, 77.9), 20: (70.6, 78.0)}, before=20, budget=True
    ),
    Choice(
        "augment.brightness",  # v1 adds a shift (SimCLR v1's code), v2 multiplies (v2's default)
        PRETRAINED,
        {"v1": (75.5, 70.2), "v2": (75.8, 67.4)},
        before="v1",
    ),
    Choice("pretrain.base_lr", PRETRAINED, {1.0: (76.6, 68.3), 3.0: (75.5, 70.2)}, before=3.0),
    Choice(
        "pretrain.epochs", PRETRAINED, {20: (75.9, 69.7), 25: (75.5, 70.2)}, before=25, budget=True
    ),
    # from the preset as chosen above (seed 0 of its three): the options the paper leaves open
    Choice("distill.alpha", DISTILLED, {0.5: (69.7, 78.3), 1.0: (70.2, 78.1)}, before=1.0),
    Choice(
        "distill.student_init",
        DISTILLED,
        {"scratch": (69.4, 75.1), "teacher": (70.2, 78.1)},
        before="teacher",
    ),
)
