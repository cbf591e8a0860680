"""A CLLMR run folder: config, resumable training state, metrics. Only this module knows its layout.

```
RUN/config.json     the resolved CllmrConfig, the run's label, package versions, the machine, git commit
RUN/state.pt        the latest training state (model, optimizer, epoch, early-stopping record, best model)
RUN/metrics.json    the final evaluation (valid and test; factual and counterfactual; the side spectrum)
RUN/log.txt         what happened, dated
RUN/FINISHED        written last
```

:meth:`CllmrRun.export` copies every file but ``state.pt`` to the committed results
(``results/cllmr/<dataset>/<label>-seed<S>``), which the chapter reads.

:class:`sprec_lib.runs.Run` is the SPRec record (its config is a ``RunConfig``, its unit a stage
with a model checkpoint); a graph recommender has one stage and a state of a few megabytes, so this
is a smaller record of the same shape, reusing its atomic JSON writer and its machine description.
Every file is written atomically (a temporary file, then a rename). A folder refuses a different
config: start a new folder to change it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..config import ConfigError, from_dict, to_dict
from ..runs import CONFIG, FINISHED, LOG, config_mismatch, provenance, read_json, write_json
from .config import CllmrConfig

STATE, METRICS = "state.pt", "metrics.json"  # config.json, log.txt and FINISHED as sprec_lib.runs names them
# TrainConfig's fields that change float rounding, not the recipe: ignored when a run is matched to a config
ROUNDING_ONLY = ("torch_threads", "fused_infonce", "blocked_infonce")


def label_of(cfg: CllmrConfig, variant: str | None = None) -> str:
    """The run's row in a table: the system, then the paper's ablations (``cllmr-mlp``,
    ``cllmr-nocf``), then ``variant`` if given (``cllmr-noise0.1``)."""
    parts = [cfg.system]
    if cfg.system == "cllmr":
        parts += ["mlp"] if cfg.sse.encoder == "mlp" else []
        parts += [] if cfg.cf.counterfactual else ["nocf"]
    return "-".join(parts + ([variant] if variant else []))


class CllmrRun:
    """Open (or create, with ``cfg``) a run folder."""

    def __init__(self, folder: str | Path, cfg: CllmrConfig | None = None, variant: str | None = None):
        self.folder = Path(folder)
        path = self.folder / CONFIG
        if path.exists():
            doc = read_json(path)
            saved = from_dict(CllmrConfig, doc["config"])
            if cfg is not None and cfg != saved:
                raise ConfigError(config_mismatch(path, to_dict(saved), to_dict(cfg)))
            self.cfg, self.label = saved, doc["label"]
        else:
            if cfg is None:
                raise FileNotFoundError(f"{path}: no CLLMR run here")
            self.cfg, self.label = cfg, label_of(cfg, variant)
            write_json({"config": to_dict(cfg), "label": self.label, **provenance(cfg.train.torch_threads)}, path)

    def __repr__(self) -> str:
        return f"CllmrRun({str(self.folder)!r}, {self.label}, seed {self.cfg.seed})"

    @property
    def is_finished(self) -> bool:
        return (self.folder / FINISHED).exists() and (self.folder / METRICS).exists()

    def log(self, message: str) -> None:
        with open(self.folder / LOG, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def save_state(self, state: dict) -> None:
        import torch

        tmp = self.folder / f"{STATE}.tmp{os.getpid()}"
        torch.save(state, tmp)
        tmp.replace(self.folder / STATE)

    def load_state(self) -> dict | None:
        """The latest training state, or None (none saved, or unreadable: training starts over)."""
        import torch

        path = self.folder / STATE
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=False)
        except Exception as e:  # a damaged file: start over, and say so
            self.log(f"state.pt unreadable ({type(e).__name__}: {e}); training starts over")
            return None

    def finish(self, metrics: dict) -> None:
        write_json(metrics, self.folder / METRICS)
        (self.folder / FINISHED).write_text(time.strftime("%Y-%m-%d %H:%M:%S") + "\n")

    def metrics(self) -> dict:
        return read_json(self.folder / METRICS)

    def made_with(self, cfg: CllmrConfig) -> bool:
        """Whether this run's config is ``cfg``, the thread count and the InfoNCE's speed switches
        (fused, blocked) aside (they change float rounding, not the recipe)."""
        def recipe(c: CllmrConfig) -> dict:
            d = to_dict(c)
            d["train"] = {k: v for k, v in d["train"].items() if k not in ROUNDING_ONLY}
            return d
        return recipe(self.cfg) == recipe(cfg)

    def export(self, dest: str | Path) -> CllmrRun:
        """Copy a finished run's small files (config, metrics, log, end marker) to ``dest``, for git;
        the training state stays here. Returns the exported run."""
        if not self.is_finished:
            raise RuntimeError(f"{self.folder}: not finished; nothing to export")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG, METRICS, LOG, FINISHED):  # FINISHED last: an interrupted copy is not a run
            if (self.folder / name).exists():
                shutil.copy2(self.folder / name, dest / name)
        return CllmrRun(dest)


def finished_runs(root: str | Path) -> list[CllmrRun]:
    """Every finished run folder under ``root`` (any depth), in path order."""
    return [CllmrRun(p.parent) for p in sorted(Path(root).rglob(FINISHED)) if (p.parent / CONFIG).exists()]
