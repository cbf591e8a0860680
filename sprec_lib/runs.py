"""The run folder: one folder per run, written stage by stage, resumable.

```
RUN/config.json              the resolved RunConfig, package versions, git commit, seed
RUN/log.txt                  what happened, appended
RUN/stages/<stage>/model/    the checkpoint after the stage (a full model, or a LoRA adapter)
RUN/stages/<stage>/log_history.json   the trainer's losses
RUN/stages/<stage>/DONE      written last: the stage finished
RUN/stages/<stage>/checkpoint-<step>/  while a stage trains: its latest trainer checkpoint
RUN/negatives/<stage>.parquet         self-play negatives
RUN/predictions/<stage>.parquet       evaluation predictions
RUN/metrics/<stage>.json              evaluation metrics
```

Running again on the same folder skips every stage whose ``DONE`` marker exists and starts the
first unfinished one from the last finished stage's model, or from the unfinished stage's latest
trainer checkpoint where it has one (saved every few minutes of training); every stage seeds
itself from the run's seed and its own name, so a resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import time
from pathlib import Path

from .config import RunConfig, from_dict, to_dict

# Minutes of training between two trainer checkpoints inside a stage (sprec_lib.trainers._train).
CHECKPOINT_MINUTES = 10.0

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "tokenizers", "sentence-transformers", "sprec-book")


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def stage_seed(seed: int, stage: str) -> int:
    """A per-stage seed: stable across processes (unlike ``hash``), distinct per stage."""
    return (seed * 1_000_003 + int(hashlib.sha256(stage.encode()).hexdigest()[:8], 16)) % 2**31


def write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


class RunConfigMismatch(ValueError):
    pass


class Run:
    def __init__(self, folder: str | Path, cfg: RunConfig | None = None):
        """Open (or create) a run folder. A new run needs ``cfg``; an existing one keeps its own,
        and refuses a different ``cfg`` (start a new folder, or delete this one, to change it)."""
        self.folder = Path(folder)
        path = self.folder / "config.json"
        if path.exists():
            saved = from_dict(RunConfig, json.loads(path.read_text())["config"])
            if cfg is not None and cfg != saved:
                diff = {k: (v, to_dict(cfg).get(k)) for k, v in to_dict(saved).items() if to_dict(cfg).get(k) != v}
                raise RunConfigMismatch(
                    f"{path}: this run was started with a different config (saved vs asked: {diff}); "
                    "use a new run folder to change it"
                )
            self.cfg = saved
        else:
            if cfg is None:
                raise FileNotFoundError(f"{path}: no run here (no config.json)")
            self.cfg = cfg
            write_json({"config": to_dict(cfg), "versions": versions(), "git_commit": git_commit(),
                        "created": time.strftime("%Y-%m-%d %H:%M:%S")}, path)

    # -- bookkeeping -------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.folder / "stages" / stage

    def done(self, stage: str) -> bool:
        return (self.stage_dir(stage) / "DONE").exists()

    def mark_done(self, stage: str, **info) -> None:
        write_json({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info}, self.stage_dir(stage) / "DONE")
        self.log(f"stage {stage} done {info if info else ''}")

    def clear(self, stage: str) -> None:
        """Remove what an interrupted attempt at ``stage`` left behind, except its trainer
        checkpoints (``checkpoint-<step>/``), from which the stage resumes."""
        if self.stage_dir(stage).exists() and not self.done(stage):
            for path in self.stage_dir(stage).iterdir():
                if not (path.is_dir() and path.name.startswith("checkpoint-")):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()

    def model_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / "model"

    def log(self, message: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(self.folder / "log.txt", "a") as f:
            f.write(line + "\n")

    # -- results -------------------------------------------------------------------------------
    def metrics_path(self, stage: str) -> Path:
        return self.folder / "metrics" / f"{stage}.json"

    def predictions_path(self, stage: str) -> Path:
        return self.folder / "predictions" / f"{stage}.parquet"

    def negatives_path(self, stage: str) -> Path:
        return self.folder / "negatives" / f"{stage}.parquet"

    def metrics(self) -> dict[str, dict]:
        """Every evaluated stage's metrics, in the order the stages finished."""
        paths = sorted((self.folder / "metrics").glob("*.json"), key=lambda p: p.stat().st_mtime)
        return {p.stem: json.loads(p.read_text()) for p in paths}
