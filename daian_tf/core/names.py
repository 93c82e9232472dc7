"""Names shared across the layers: splits, files, models, metrics, outputs.

Each is spelled here once; modules import the constant, never repeat the literal.
"""

from __future__ import annotations

# --- splits --------------------------------------------------------------------------
# by time: train | validation | eval. Transform analyses train only; every choice made
# while fitting (best epoch, early stop) reads validation only; eval is the held-out
# test split, read only by what reports or gates (tables, TFMA's Evaluators)
TRAIN, VALIDATION, EVAL = "train", "validation", "eval"
SPLITS = (TRAIN, VALIDATION, EVAL)
# samples.sort_output: the order of a split's records (data/sample_builder.py)
SORT_SORTED, SORT_RUNNER = "sorted", "runner"
SORT_OUTPUTS = (SORT_SORTED, SORT_RUNNER)
# movielens.construction: what a MovieLens request shows (data/convert/movielens.py)
ML_NEXT_LIKES, ML_SHOWN_PAGE = "next_likes", "shown_page"
ML_CONSTRUCTIONS = (ML_NEXT_LIKES, ML_SHOWN_PAGE)

# --- files -----------------------------------------------------------------------------
REPORT_FILE = "report.json"  # the sample builder's report, at the samples' root
SAMPLES_PREFIX, SAMPLES_SUFFIX = "data", ".tfrecord.gz"  # <split>/data-*.tfrecord.gz
SAMPLES_GLOB = f"{SAMPLES_PREFIX}-*{SAMPLES_SUFFIX}"

# --- models ----------------------------------------------------------------------------
DIN, DAIAN = "din", "daian"
# the trigger-aware baselines of DAIAN's Table 1 and the other systems of our sources
# (docs/models.md)
DIHN, DIAN, DEI2N = "dihn", "dian", "dei2n"
INTENTREC, DUPN = "intentrec", "dupn"
MODEL_NAMES = (DIN, DAIAN, DIHN, DIAN, DEI2N, INTENTREC, DUPN)
CTR_OUTPUT = "ctr_probability"  # the name of a model's click-probability layer/output

# --- training --------------------------------------------------------------------------
SHUFFLE_REQUEST, SHUFFLE_EXAMPLE = "request", "example"
SHUFFLE_UNITS = (SHUFFLE_REQUEST, SHUFFLE_EXAMPLE)
CACHE_NONE, CACHE_MEMORY = "none", "memory"
CACHE_MODES = (CACHE_NONE, CACHE_MEMORY)
ADAM, ADAGRAD = "adam", "adagrad"
OPTIMIZER_NAMES = (ADAM, ADAGRAD)
STAGE2_LOO, STAGE2_PLAIN = "loo", "plain"  # [I-3] the intent label of stage 2
STAGE2_LABELS = (STAGE2_LOO, STAGE2_PLAIN)
# DAIAN's training stages (DAIAN.md §7), also the pipeline's Trainer stages
STAGE1, STAGE2, STAGE3 = "stage1", "stage2", "stage3"
STAGES = (STAGE1, STAGE2, STAGE3)
JOINT = "joint"  # the one joint stage of the "w/o three-stage" ablation
# train.distribution: one process, or tf.distribute.MultiWorkerMirroredStrategy across
# the workers of TF_CONFIG (training/multi_worker.py)
SINGLE, MULTI_WORKER = "single", "multi_worker"
DISTRIBUTIONS = (SINGLE, MULTI_WORKER)

# --- evaluation ------------------------------------------------------------------------
AUC, GAUC, LOGLOSS = "auc", "gauc", "logloss"
# the metric a fit keeps its best epoch by (training/best_epoch.py): (Keras log key,
# mode) for stage 1 (the KL fit) and for the CTR fits (DIN, DAIAN's stages 2 and 3)
CTR_FIT = "ctr"
BEST_EPOCH_MONITOR = {STAGE1: ("val_loss", "min"), CTR_FIT: (f"val_{AUC}", "max")}
METRIC_NAMES = (AUC, GAUC, LOGLOSS)  # the metrics of every table
METRIC_LABELS = {AUC: "AUC", GAUC: "GAUC", LOGLOSS: "logloss"}  # as tables print them
# columns of a scored split (evaluation.columns.collect_columns), beside feature keys
SCORE_COLUMN, INTENT_COLUMN = "score", "intent"
