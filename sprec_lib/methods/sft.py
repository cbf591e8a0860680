"""BIGRec: supervised fine-tuning on (prompt, next item) — the paper's SFT baseline and every
other method's start (Table 1's "BIGRec")."""

from . import Method, register


def run(p) -> str:
    return p.shared_start()


def plan(cfg) -> list:
    return []  # nothing after the shared start


register(Method(name="sft", title="BIGRec (SFT)", run=run, plan=plan, order=10, paper="sft", doc=__doc__))
