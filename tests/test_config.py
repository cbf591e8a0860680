"""Config validation: every field is checked where it is declared (``__post_init__``), and
``override``/``run_config`` raise :class:`ConfigError`, naming the key, for anything invalid."""

import dataclasses
import json
from pathlib import Path

import pytest

from sprec_lib import prompts
from sprec_lib.config import (
    MODEL_PROFILES,
    PROFILE_NAMES,
    PROFILES,
    ConfigError,
    EvalConfig,
    ModelConfig,
    PrepareConfig,
    RunConfig,
    SPRecConfig,
    StageConfig,
    choices,
    from_dict,
    override,
    run_config,
    to_dict,
)
from sprec_lib.data import SPLITS
from sprec_lib.quick import QUICK_RUN

ROOT = Path(__file__).resolve().parents[1]

# (assignment, what the message must name)
BAD = [
    ("seed=-1", "seed"),
    ("seed=1.5", "seed"),
    ("seed=true", "seed"),
    ("seed=abc", "seed"),
    ("train_rows=-5", "train_rows"),
    ("train_rows=0", "train_rows"),
    ("profile=huge", "profile"),
    ("sft.lr=abc", "sft.lr"),
    ("sft.lr=0", "sft.lr"),
    ("sft.lr=-1e-4", "sft.lr"),
    ("sft.lr=nan", "sft.lr"),
    ("sft.lr=inf", "sft.lr"),
    ("dpo.lr=0", "dpo.lr"),
    ("sprec.dpo.lr=nan", "sprec.dpo.lr"),
    ("sft.batch_size=0", "sft.batch_size"),
    ("sprec.sft.batch_size=0", "sprec.sft.batch_size"),
    ("sft.grad_accum=0", "sft.grad_accum"),
    ("sft.max_length=0", "sft.max_length"),
    ("sft.epochs=-1", "sft.epochs"),
    ("sft.epochs=inf", "sft.epochs"),
    ("sft.max_steps=0", "sft.max_steps"),
    ("sft.max_steps=-2", "sft.max_steps"),
    ("sft.warmup_steps=-1", "sft.warmup_steps"),
    ("sft.logging_steps=0", "sft.logging_steps"),
    ("sft.weight_decay=-0.1", "sft.weight_decay"),
    ("sft.scheduler=bogus", "sft.scheduler"),
    ("sft.loss_on=prompt", "sft.loss_on"),
    ("sft.template=chatml", "sft.template"),
    ("dpo.beta=0", "dpo.beta"),
    ("dpo.beta=nan", "dpo.beta"),
    ("sdpo.n_negatives=0", "sdpo.n_negatives"),
    ("sprec.iterations=-1", "sprec.iterations"),
    ("sprec.iterations=0", "sprec.iterations"),
    ("sprec.train_rows=0", "sprec.train_rows"),
    ("sprec.valid_rows=-1", "sprec.valid_rows"),
    ("sprec.negatives=hard", "sprec.negatives"),
    ("sprec.decoding=beam", "sprec.decoding"),
    ("sprec.random_ratio=1.5", "sprec.random_ratio"),
    ("sprec.random_ratio=-0.1", "sprec.random_ratio"),
    ("sprec.n_negatives=0", "sprec.n_negatives"),
    ("sprec.negative_max_new_tokens=0", "sprec.negative_max_new_tokens"),
    ("sprec.sft_step=maybe", "sprec.sft_step"),
    ("eval.mode=foo", "eval.mode"),
    ("eval.split=dev", "eval.split"),
    ("eval.rows=-3", "eval.rows"),
    ("eval.rows=0", "eval.rows"),
    ("eval.ks=", "eval.ks"),
    ("eval.ks=1,0", "eval.ks"),
    ("eval.ks=1,x", "eval.ks"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("model.vocab_size=1", "model.vocab_size"),
    ("model.hidden_size=0", "model.hidden_size"),
    ("model.num_layers=0", "model.num_layers"),
    ("model.num_heads=3", "model.num_heads"),
    ("model.lora_r=0", "model.lora_r"),
    ("model.lora_dropout=1", "model.lora_dropout"),
    ("model.lora_dropout=-0.1", "model.lora_dropout"),
    ("model.torch_threads=0", "model.torch_threads"),
    ("model.profile=huge", "model.profile"),
    ("lr=1e-4", "lr"),  # no top-level field
    ("sprec=3", "sprec"),
    ("seed.x=1", "seed"),
    ("sprec.nope=1", "nope"),
    ("noequals", "noequals"),
]


@pytest.mark.parametrize("assignment,name", BAD)
def test_bad_assignment_raises_config_error_naming_the_field(assignment, name):
    with pytest.raises(ConfigError) as e:
        run_config("tiny", [assignment])
    message = str(e.value)
    assert name in message and "\n" not in message


def test_bad_literal_names_value_and_choices():
    with pytest.raises(ConfigError, match=r"eval\.mode.*'foo'.*'grounded', 'constrained'"):
        override(run_config("tiny"), ["eval.mode=foo"])


def test_range_error_names_key_value_and_expectation():
    with pytest.raises(ConfigError, match=r"sprec\.iterations.*>= 1.*--method sft.*got -1"):
        run_config("tiny", ["sprec.iterations=-1"])


def test_section_cannot_take_a_scalar():
    with pytest.raises(ConfigError, match=r"sprec is a section; set its fields, e\.g\. sprec\.iterations="):
        run_config("tiny", ["sprec=3"])
    with pytest.raises(ConfigError, match="not a section"):
        run_config("tiny", ["seed.x=1"])


GOOD = [
    ("eval.rows=none", lambda c: c.eval.rows is None),
    ("eval.rows=1", lambda c: c.eval.rows == 1),
    ("train_rows=null", lambda c: c.train_rows is None),
    ("pretrain.epochs=0", lambda c: c.pretrain.epochs == 0),
    ("sprec.random_ratio=0", lambda c: c.sprec.random_ratio == 0),
    ("sprec.random_ratio=1", lambda c: c.sprec.random_ratio == 1),
    ("seed=0", lambda c: c.seed == 0),
    ("sft.max_steps=-1", lambda c: c.sft.max_steps == -1),
    ("sft.max_steps=1", lambda c: c.sft.max_steps == 1),
    ("sft.warmup_steps=0", lambda c: c.sft.warmup_steps == 0),
    ("sft.weight_decay=0", lambda c: c.sft.weight_decay == 0),
    ("sft.scheduler=cosine", lambda c: c.sft.scheduler == "cosine"),
    ("sft.template=raw", lambda c: c.sft.template == "raw"),
    ("sprec.iterations=1", lambda c: c.sprec.iterations == 1),
    ("eval.ks=1", lambda c: c.eval.ks == (1,)),
    ("eval.mode=constrained", lambda c: c.eval.mode == "constrained"),
    ("eval.split=valid", lambda c: c.eval.split == "valid"),
    ("model.lora_dropout=0", lambda c: c.model.lora_dropout == 0),
    ("model.torch_threads=none", lambda c: c.model.torch_threads is None),
    ("model.vocab_size=2", lambda c: c.model.vocab_size == 2),
]


@pytest.mark.parametrize("assignment,check", GOOD)
def test_edge_values_are_accepted(assignment, check):
    assert check(run_config("tiny", [assignment]))


def test_assignment_order_does_not_matter_for_cross_field_checks():
    # num_heads=3 alone does not divide the default hidden size 256; with hidden_size=96 it does.
    for order in (["model.num_heads=3", "model.hidden_size=96"], ["model.hidden_size=96", "model.num_heads=3"]):
        cfg = run_config("tiny", order)
        assert (cfg.model.hidden_size, cfg.model.num_heads) == (96, 3)


def test_choices_come_from_the_literals():
    assert choices(EvalConfig, "mode") == ("grounded", "constrained")
    assert set(choices(EvalConfig, "split")) == set(SPLITS)
    assert choices(SPRecConfig, "negatives") == ("self", "random", "mix")
    assert choices(SPRecConfig, "decoding") == ("free", "constrained")
    assert choices(StageConfig, "loss_on") == ("all", "completion")
    assert set(choices(StageConfig, "template")) == set(prompts.TEMPLATES)
    assert choices(ModelConfig, "profile") == choices(RunConfig, "profile") == PROFILE_NAMES
    assert set(PROFILE_NAMES) == set(PROFILES) == set(MODEL_PROFILES)
    with pytest.raises(TypeError):
        choices(RunConfig, "method")  # a str: the methods' registry checks it


def test_scheduler_choices_are_transformers_schedulers():
    from transformers import SchedulerType

    assert "linear" in choices(StageConfig, "scheduler")
    assert set(choices(StageConfig, "scheduler")) <= {s.value for s in SchedulerType}


@pytest.mark.parametrize("make", [
    lambda: RunConfig(seed="3"),
    lambda: RunConfig(seed=True),
    lambda: RunConfig(sprec=3),
    lambda: StageConfig(batch_size="4"),
    lambda: StageConfig(lr=float("nan")),
    lambda: EvalConfig(ks=[1, 5]),
    lambda: EvalConfig(ks=(1, True)),
    lambda: ModelConfig(lora_targets="q_proj"),
    lambda: SPRecConfig(iterations=2.0),
    lambda: PrepareConfig(split_ratio=(8, 1)),
    lambda: PrepareConfig(split_ratio=(8, 1, 0)),
    lambda: PrepareConfig(min_history=0),
    lambda: PrepareConfig(min_history=6, max_history=5),
    lambda: PrepareConfig(train_size=0),
    lambda: PrepareConfig(n_genres=-1),
])
def test_direct_construction_is_checked(make):
    with pytest.raises(ConfigError):
        make()


def test_prepare_config_override():
    cfg = override(PrepareConfig(), ["min_history=12", "max_history=20", "train_size=none"])
    assert (cfg.min_history, cfg.max_history, cfg.train_size) == (12, 20, None)
    with pytest.raises(ConfigError, match="max_history"):
        override(PrepareConfig(), ["max_history=3"])
    with pytest.raises(ConfigError, match="split_ratio"):
        override(PrepareConfig(), ["split_ratio=8,1,0"])


def test_run_config_rejects_unknown_profile_and_fields():
    with pytest.raises(ConfigError, match="profile"):
        run_config("huge")
    with pytest.raises(ConfigError, match="nope"):
        run_config("tiny", nope=1)
    with pytest.raises(ConfigError, match="seed"):
        run_config("tiny", seed=-1)


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("quick", [False, True])
def test_profiles_construct_and_round_trip(profile, quick):
    cfg = run_config(profile, QUICK_RUN if quick else None)
    assert cfg.profile == cfg.model.profile == profile
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_defaults_construct():
    for cls in (PrepareConfig, ModelConfig, StageConfig, SPRecConfig, EvalConfig, RunConfig):
        assert dataclasses.replace(cls()) == cls()


COMMITTED = sorted((ROOT / "results").glob("runs/**/config.json")) + sorted((ROOT / "results").glob("investigations/**/config.json"))


def test_there_are_committed_configs():
    assert len(COMMITTED) > 0


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_run_configs_load(path):
    saved = json.loads(path.read_text())["config"]
    cfg = from_dict(RunConfig, saved)

    def kept(old, new):  # every saved value is read back; fields added since take their defaults
        if isinstance(old, dict):
            return all(k in new and kept(v, new[k]) for k, v in old.items())
        return old == new

    assert kept(saved, json.loads(json.dumps(to_dict(cfg))))


def test_dataset_overrides_apply_by_folder_name_and_yield_to_set():
    """CDs_and_Vinyl's tiny pretraining is 3x the profile's (issue 14); --set still wins, the other
    datasets and profiles keep the profile's value."""
    from sprec_lib.config import DATASET_OVERRIDES, PROFILES

    profile_steps = int(PROFILES["tiny"]["pretrain.max_steps"])
    assert DATASET_OVERRIDES["tiny"]["CDs_and_Vinyl"] == {"pretrain.max_steps": "1200"}
    assert run_config("tiny", dataset="/any/where/CDs_and_Vinyl").pretrain.max_steps == 1200 == 3 * profile_steps
    assert run_config("tiny", dataset="/any/where/MovieLens").pretrain.max_steps == profile_steps
    assert run_config("tiny").pretrain.max_steps == profile_steps
    assert run_config("paper", dataset="/x/CDs_and_Vinyl").pretrain == run_config("paper").pretrain
    assert run_config("tiny", ["pretrain.max_steps=7"], dataset="/x/CDs_and_Vinyl").pretrain.max_steps == 7
    # SPRec's T: the paper's 5 in tiny, but 3 on ml-1m (its runs were made so), and --set still wins.
    assert run_config("tiny", method="sprec", dataset="/x/MovieLens").sprec.iterations == 5
    assert run_config("tiny", method="sprec", dataset="data/ml-1m").sprec.iterations == 3
    assert run_config("tiny", ["sprec.iterations=5"], method="sprec", dataset="data/ml-1m").sprec.iterations == 5
