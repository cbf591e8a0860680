"""How long one row with a long history takes to parse: the old history split against the new one.

    python benchmarks/parse_history.py [--repeats 5] [--old-cap-s 3]

One row of the paper's format whose ``input`` lists N catalogue titles is parsed with
:func:`sprec_lib.data.sprec_format.parse_rows` (split the history, resolve every title and the
target), ``--repeats`` times; the table gives the median seconds. "old" is a private copy of the
split that issue 12 found cubic (every run of pieces from i to the end was re-joined and looked
up); "new" is the library's. Old is timed only at sizes where its cubic growth from the last
size timed predicts at most ``--old-cap-s`` seconds a parse, and its splits are checked equal to
new's wherever it ran. Two catalogues:

* ``MovieLens``: the paper's MovieLens catalogue (``../shared/data/sprec`` when present, else the
  synthetic one): no title holds ``", "``, as in all four released folders;
* ``quirky``: the synthetic catalogue plus titles that do hold ``", "`` (up to three pieces),
  with every tenth history title one of those, so that re-joining is exercised.

Writes ``benchmarks/results/parse_history.json``. Timings on a shared 2-core machine are noisy:
read the medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sprec_lib.data import Catalogue, Wording  # noqa: E402
from sprec_lib.data.io import read_titles  # noqa: E402
from sprec_lib.data.sprec_format import _TitleResolver, parse_rows  # noqa: E402
from sprec_lib.data.synthetic import make_synthetic  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "sprec"
SIZES = (100, 200, 400, 800, 1600, 3000)
W = Wording.for_items("movies")


class OldResolver(_TitleResolver):
    """The split before issue 12, verbatim: for each start, every longer run is joined and looked up."""

    def split_history(self, body: str) -> list[str]:
        pieces = body.split('", "')
        titles, i = [], 0
        while i < len(pieces):
            for j in range(len(pieces), i, -1):
                joined = '", "'.join(pieces[i:j])
                if j == i + 1 or self(joined) is not None:
                    break
            titles.append(joined)
            i = j
        return titles


def catalogues() -> dict[str, tuple[Catalogue, list[str]]]:
    """name -> (catalogue, the history titles to cycle through)."""
    synthetic = make_synthetic(n_items=500).catalogue
    if (SHARED / "MovieLens" / "eval" / "id2name.json").exists():
        titles = read_titles(SHARED / "MovieLens" / "eval" / "id2name.json")
        movielens = (Catalogue(titles, tuple(() for _ in titles)), "MovieLens (paper's folder)")
    else:
        movielens = (synthetic, "MovieLens absent: synthetic")
    multi = [f'Rock {i}, Paper", "Scissors' for i in range(20)] + [f'A", "B", "C {i}' for i in range(20)]
    quirky = Catalogue(synthetic.titles + tuple(multi), synthetic.genres + tuple(() for _ in multi))
    quirky_history = [t if n % 10 else multi[n % len(multi)] for n, t in enumerate(synthetic.titles)]
    return {
        "MovieLens": (movielens[0], list(movielens[0].titles), movielens[1]),
        "quirky": (quirky, quirky_history, "synthetic + 40 titles holding '\", \"'"),
    }


def row(history: list[str], target: str) -> dict[str, str]:
    return {"instruction": W.instruction, "input": W.input_head + ", ".join(f'"{t}"' for t in history) + W.input_tail,
            "output": f'"{target}"\n'}


def time_parse(resolver_cls, catalogue, r, repeats):
    times, out = [], None
    for _ in range(repeats):
        resolver = resolver_cls(catalogue)
        t0 = time.perf_counter()
        out = parse_rows(Path("bench.json"), [r], resolver)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--old-cap-s", type=float, default=3.0, help="time the old split only where one parse is predicted faster")
    args = ap.parse_args()

    results = []
    for name, (catalogue, pool, label) in catalogues().items():
        last = None  # (titles, seconds) of the old split's last timed size
        for n in SIZES:
            history = [pool[(7 * k) % len(pool)] for k in range(n)]
            r = row(history, pool[0])
            new_s, new = time_parse(_TitleResolver, catalogue, r, args.repeats)
            old_s = None
            # The old split is cubic: time it only where that predicts at most --old-cap-s a parse.
            if last is None or last[1] * (n / last[0]) ** 3 <= args.old_cap_s:
                old_s, old = time_parse(OldResolver, catalogue, r, args.repeats)
                last = (n, old_s)
                if old.samples != new.samples:
                    raise SystemExit(f"{name}, {n} titles: the old and new splits differ")
            assert len(new.samples[0].history) == n
            results.append({"catalogue": name, "source": label, "titles": n, "old_s": old_s, "new_s": new_s,
                            "speedup": old_s / new_s if old_s else None})

    print(f"{'catalogue':<10} {'titles':>6} {'old s':>10} {'new s':>10} {'speedup':>9}")
    for r in results:
        old = f"{r['old_s']:.4f}" if r["old_s"] is not None else "(not run)"
        speed = f"{r['speedup']:.0f}x" if r["speedup"] else ""
        print(f"{r['catalogue']:<10} {r['titles']:>6} {old:>10} {r['new_s']:>10.5f} {speed:>9}")
    out = ROOT / "benchmarks" / "results" / "parse_history.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "what": "median seconds to parse one row whose history lists N titles (parse_rows: split + resolve)",
        "repeats": args.repeats, "old_cap_s": args.old_cap_s,
        "old_note": "old (the split before issue 12) is timed only where n^3 growth from the last size timed "
                    "predicts at most old_cap_s seconds; null: not timed",
        "python": platform.python_version(), "machine": platform.machine(),
        "results": results,
    }, indent=1) + "\n")
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
