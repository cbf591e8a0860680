"""Where a CLLMR training step's time goes on ML-1M: each part's CPU time, two versions of the code side by side.

    OMP_NUM_THREADS=1 python benchmarks/cllmr_step_parts.py --baseline HEAD --steps 8 --rounds 3

For each system (``--systems``), the working tree's ``sprec_lib/cllmr`` and, with ``--baseline REV``,
the same package as of git revision ``REV`` (loaded beside it as ``benchmarks/cllmr_cost.py`` does)
train on ML-1M's first batches (RLMRec's 4,096 pairs, one thread, title-genres side vectors, the
fused InfoNCE), ``--steps`` steps a round, the versions alternating for ``--rounds`` rounds, first
with glibc's default allocator, then with it tuned (:func:`sprec_lib.cpu.keep_freed_memory`: it
cannot be undone, so in that order; ``--malloc tuned`` skips the first). Per step, in the process's
CPU milliseconds (on a shared machine wall time stretches with the other jobs' load):

* ``adjacency``: the edge-dropped CSR pair (``Graph.matrices``);
* ``propagation``: LightGCN's three sparse products over it, forward and backward;
* ``side encoder``: the SSE (its VAE loss included) or RLMRec's MLP over every user and item,
  forward and backward;
* ``alignment``: the three InfoNCE terms (batch users against all users' side representations,
  positives and negatives against their own), forward and backward;
* ``rest``: a whole step (``Recommender.loss``, backward, Adam) minus the parts above, timed on
  other steps: BPR, propensity, L2, Adam, and what the parts' separate backward calls do not share;
* ``step``: the whole step; ``kernel``: its kernel CPU time; ``faults``: its minor page faults.

The parts are timed with separate backward calls (unit upstream gradients), so they add up to a
step only roughly. For the allocator's effect, time one system, without ``--baseline``, in a fresh
process (as a run is: glibc's default faults less once several models' freed memory is lying in
the heap). Writes ``benchmarks/results/cllmr_step_parts.json`` (``--out``: elsewhere).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cllmr_cost import load_baseline  # noqa: E402

from sprec_lib.cllmr import config as current_config  # noqa: E402
from sprec_lib.cllmr import train as current_train  # noqa: E402
from sprec_lib.cllmr.config import cllmr_config  # noqa: E402
from sprec_lib.cllmr.data import load_implicit  # noqa: E402
from sprec_lib.cpu import keep_freed_memory  # noqa: E402
from sprec_lib.runs import machine, versions  # noqa: E402

PARTS = ["adjacency", "propagation", "side encoder", "alignment", "rest", "step", "kernel", "faults"]


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_stime, r.ru_minflt


class Timed:
    """One version's model on the system, and its parts timed (module docstring)."""

    def __init__(self, config_module, train_module, system: str, data):
        self.cfg = config_module.cllmr_config(["side.profiles=title-genres"], system=system)
        self.inputs = train_module.prepare(self.cfg, data, progress=False)
        self.model = train_module.build(self.cfg, self.inputs)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.train.lr)
        self.align = sys.modules[train_module.__name__.rsplit(".", 1)[0] + ".rlmrec"].alignment_loss
        self.lightgcn = sys.modules[train_module.__name__.rsplit(".", 1)[0] + ".lightgcn"]
        rng = np.random.default_rng([self.cfg.seed, 0])
        self.batches = list(self.lightgcn.epoch_batches(data.train, self.cfg.train.batch_size, rng))
        self.gen = torch.Generator().manual_seed(0)
        self.cpu = {p: [] for p in PARTS}
        self.next = 0

    def _batch(self):
        self.next = (self.next + 1) % len(self.batches)
        return self.batches[self.next]

    def parts_step(self) -> None:
        model, cfg, gen = self.model, self.cfg, self.gen
        bb = model.backbone
        users, pos, negs = self._batch()
        t = [time.process_time()]

        def tick(part):
            now = time.process_time()
            self.cpu[part].append(1000 * (now - t[0]))
            t[0] = now

        a, a_t = bb.graph.matrices(cfg.backbone.keep_rate, gen)
        tick("adjacency")
        out = bb.propagate(a, a_t)
        out.sum().backward()
        tick("propagation")
        u_emb, i_emb = out.detach()[:bb.n_users], out.detach()[bb.n_users:]
        if model.encoder is not None:
            u_side, i_side, terms = model.side(gen)
            loss = u_side.sum() + i_side.sum()
            if terms:
                loss = loss + (terms["recon"] + terms["kl"]).mean()
            loss.backward()
            tick("side encoder")
            xs = [x.detach().requires_grad_() for x in (u_emb, i_emb, u_side, i_side)]
            extra = {"blocked": cfg.train.blocked_infonce} if hasattr(cfg.train, "blocked_infonce") else {}
            self.align(*xs, users, pos, negs, cfg.align.kd_temperature, cfg.align.user_candidates,
                       fused=cfg.train.fused_infonce, **extra).backward()
            tick("alignment")
        else:
            for part in ("side encoder", "alignment"):
                self.cpu[part].append(0.0)
        model.zero_grad()

    def whole_step(self) -> None:
        u0 = _usage()
        self.opt.zero_grad()
        loss, _ = self.model.loss(*self._batch(), self.gen)
        loss.backward()
        self.opt.step()
        u1 = _usage()
        self.cpu["step"].append(1000 * (u1[0] - u0[0]))
        self.cpu["kernel"].append(1000 * (u1[1] - u0[1]))
        self.cpu["faults"].append(u1[2] - u0[2])

    def summary(self) -> dict:
        out = {p: statistics.median(v) for p, v in self.cpu.items() if v}
        out["rest"] = out["step"] - sum(out[p] for p in ("adjacency", "propagation", "side encoder", "alignment"))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", nargs="+", default=["backbone", "rlmrec-con", "cllmr"])
    ap.add_argument("--baseline", metavar="REV", default=None, help="also time sprec_lib/cllmr as of this git revision")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--malloc", choices=["both", "tuned"], default="both")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cllmr_step_parts.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_implicit(cllmr_config().data)
    codes = {"current": (current_config, current_train)}
    commit = None
    if args.baseline:
        base_config, base_train, commit = load_baseline(args.baseline)
        codes = {"baseline": (base_config, base_train), **codes}
    phases = ["default", "tuned"] if args.malloc == "both" else ["tuned"]
    if phases[0] == "tuned":
        keep_freed_memory()
    rows = []
    for system in args.systems:
        timed = {code: Timed(*mods, system, data) for code, mods in codes.items()}
        for phase in phases:
            if phase == "tuned":
                keep_freed_memory()
            for t in timed.values():
                t.cpu = {p: [] for p in PARTS}
                for _ in range(2):  # warm-up
                    t.whole_step()
                    t.parts_step()
                t.cpu = {p: [] for p in PARTS}
            for _ in range(args.rounds):
                for t in timed.values():
                    for _ in range(args.steps):
                        t.parts_step()
                        t.whole_step()
            for code, t in timed.items():
                rows.append({"system": system, "code": code, "malloc": phase, "cpu_ms": t.summary()})
                s = rows[-1]["cpu_ms"]
                print(f"{system:10s} {code:8s} {phase:7s} " + "  ".join(f"{p} {s[p]:.1f}" for p in PARTS), flush=True)
    result = {"rows": rows, "baseline": args.baseline, "baseline_commit": commit, "steps": args.steps,
              "rounds": args.rounds, "machine": machine(1), "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print("\n| system | code | malloc | " + " | ".join(PARTS) + " |\n|" + "---|" * (len(PARTS) + 3))
    for r in rows:
        s = r["cpu_ms"]
        print(f"| {r['system']} | {r['code']} | {r['malloc']} | " + " | ".join(
            f"{s[p]:.0f}" if p != "faults" else f"{s[p]:.0f}" for p in PARTS) + " |")
    print(f"(CPU ms a step, medians; faults: minor page faults a step) -> {args.out}")


if __name__ == "__main__":
    main()
