"""What an experiment varies: ``FinetuneSpec`` names one fine-tuned model (task, pipeline, beta schedule,
data fraction, label quality, initialisation, losses, seed). Its fingerprint keys the model's cache folder, so
two notebooks that ask for the same model (the one-step depth model of 01 and the 1/1 row of 04) train it once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import cache, formulations, schedule, tasks

LABEL_SOURCES = ("clean", "reallike")
INITS = ("prior", "scratch")
@dataclass(frozen=True)
class FinetuneSpec:
    task: str = "depth"
    formulation: str = "one_step"
    betas: tuple[float, float] = schedule.SD21_BETAS  # ignored by one_step (alpha_bar = 0 by definition)
    fraction: float = 1.0          # share of the training pool (Table 2: 1, 1/2, ..., 1/16)
    labels: str = "clean"          # "clean" synthetic labels or "reallike" defective ones (Fig. 3)
    init: str = "prior"            # "prior" (pretrained generator) or "scratch" (random U-Net)
    multires_noise: bool = True    # Marigold's pyramid noise; used only with Gaussian noise (stochastic)
    pixel_loss: bool = False       # add the task's pixel-space loss through the frozen VAE decoder
    steps: int | None = None       # None: the profile's train_steps
    seed: int = 0
    train_subset: str = "all"      # toy world: which scenes train (a task's named subset, e.g. matting's "people")

    def __post_init__(self):
        task = tasks.get(self.task)  # an unknown task: one line listing the registered ones
        checks = {"formulation": (self.formulation, formulations.FORMULATIONS),
                  "labels": (self.labels, LABEL_SOURCES), "init": (self.init, INITS)}
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction!r}: expected a number in (0, 1]")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b <= 1 for b in self.betas):
            # checked here, not first by the schedule: `train` renders and trains the prior before that
            raise ValueError(f"betas={tuple(self.betas)!r}: expected (beta_start, beta_end), each a number in [0, 1]")
        allowed = task.formulations
        if allowed and self.formulation not in allowed:
            raise ValueError(f"formulation={self.formulation!r}: the {task.name} task runs {', '.join(allowed)}")
        if self.pixel_loss and not task.has_pixel_loss:
            raise ValueError(f"pixel_loss=True: the {task.name} task defines no pixel-space loss")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps={self.steps!r}: expected an integer >= 1 or None")
        subsets = ("all", *task.train_subsets)
        if self.train_subset not in subsets:
            raise ValueError(f"train_subset={self.train_subset!r}: expected one of {', '.join(subsets)}")

    def fingerprint(self) -> str:
        return cache.key(dataclasses.asdict(self), 10)

    def label(self) -> str:
        parts = [self.task, self.formulation]
        if self.formulation != "one_step":
            parts.append(f"betas=({self.betas[0]:g},{self.betas[1]:g})")
        if self.fraction != 1:
            parts.append(f"data={self.fraction:g}")
        if self.labels != "clean":
            parts.append(self.labels)
        if self.init != "prior":
            parts.append(self.init)
        if self.pixel_loss:
            parts.append("pixel-loss")
        if self.train_subset != "all":
            parts.append(f"trained on {self.train_subset}")
        return " ".join(parts)
