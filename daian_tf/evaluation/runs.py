"""What an experiment measures per trained model, and its reference rows.

Per run: AUC / GAUC / logloss, GAUC by intent-diversity group and, for models with an
intent distribution, the JS divergence of p̂ against the intent label for specific- and
broad-intent users. Reference rows: the oracle (`p_true` of the simulator, where present)
and the popularity baseline.

Specific- and broad-intent users are the users whose mean train intent label has the
lowest / highest entropy (`experiment.intent_group_fraction` of the labelled users each).
"""

from __future__ import annotations

from typing import List, Mapping, Tuple

import numpy as np

from daian_tf.core import features as F
from daian_tf.core.names import INTENT_COLUMN, SCORE_COLUMN
from daian_tf.evaluation.columns import FilePattern, collect_columns, popularity_metrics
from daian_tf.evaluation.tables import main_metrics, ranking_metrics
from daian_tf.metrics.intent import js_divergence
from daian_tf.metrics.ranking import gauc_by_group

DIVERSITY_TOP = 2  # groups 0, 1, 2+


def user_intent_groups(train_pattern: FilePattern, tf_transform_output,
                       fraction: float) -> Tuple[set, set]:
    """(specific, broad) user keys: lowest / highest entropy of each user's mean train
    intent label, `fraction` of the labelled users each."""
    cols = collect_columns(None, train_pattern, tf_transform_output,
                           [F.USER_KEY, F.xf(F.INTENT_LABEL), F.xf(F.INTENT_MASK)])
    labelled = cols[F.xf(F.INTENT_MASK)] > 0
    users = cols[F.USER_KEY][labelled]
    labels = cols[F.xf(F.INTENT_LABEL)][labelled]
    order = np.argsort(users, kind="stable")
    users, labels = users[order], labels[order]
    unique, starts = np.unique(users, return_index=True)
    means = np.add.reduceat(labels, starts, axis=0)
    means /= means.sum(axis=1, keepdims=True)
    entropy = -np.sum(np.where(means > 0, means * np.log(np.maximum(means, 1e-12)), 0),
                      axis=1)
    k = max(1, int(round(fraction * len(unique))))
    ranked = unique[np.argsort(entropy, kind="stable")]
    return set(ranked[:k].tolist()), set(ranked[-k:].tolist())


def _diversity_group(values: np.ndarray) -> np.ndarray:
    return np.array([f"{DIVERSITY_TOP}+" if v >= DIVERSITY_TOP else str(int(v))
                     for v in values], dtype=object)


def _intent_block(cols: Mapping[str, np.ndarray], specific: set, broad: set) -> dict:
    """JS divergence of p̂ vs the intent label per labelled eval request, by user group."""
    labelled = cols[F.xf(F.INTENT_MASK)] > 0
    _, first = np.unique(cols[F.REQUEST_KEY], return_index=True)
    rows = np.array(sorted(i for i in first if labelled[i]), dtype=np.int64)
    pred, true = cols[INTENT_COLUMN][rows], cols[F.xf(F.INTENT_LABEL)][rows]
    users = cols[F.USER_KEY][rows]
    js = js_divergence(true, pred)
    block = {"js_all": float(np.mean(js)) if len(js) else float("nan"),
             "requests_all": int(len(js))}
    for name, group in (("specific", specific), ("broad", broad)):
        in_group = np.array([u in group for u in users], dtype=bool)
        block[f"js_{name}"] = (float(np.mean(js[in_group])) if in_group.any()
                               else float("nan"))
        block[f"requests_{name}"] = int(in_group.sum())
        block[f"mean_pred_{name}"] = (pred[in_group].mean(axis=0).tolist()
                                      if in_group.any() else [])
        block[f"mean_true_{name}"] = (true[in_group].mean(axis=0).tolist()
                                      if in_group.any() else [])
    return block


def evaluate_run(model, eval_pattern: FilePattern, tf_transform_output,
                 with_intent: bool, groups: Tuple[set, set]) -> dict:
    """Metrics, GAUC by diversity group and (optionally) the intent block of a model."""
    keys = [F.USER_KEY, F.REQUEST_KEY, F.raw(F.INTENT_DIVERSITY),
            F.xf(F.INTENT_LABEL), F.xf(F.INTENT_MASK)]
    cols = collect_columns(model, eval_pattern, tf_transform_output, keys, with_intent)
    metrics = ranking_metrics(cols[F.LABEL], cols[SCORE_COLUMN], cols[F.USER_KEY])
    by_group = gauc_by_group(cols[F.LABEL], cols[SCORE_COLUMN], cols[F.USER_KEY],
                             _diversity_group(cols[F.raw(F.INTENT_DIVERSITY)]))
    run = {"metrics": main_metrics(metrics),
           "gauc_by_diversity": {str(k): v.value for k, v in by_group.items()}}
    if with_intent:
        run["intent"] = _intent_block(cols, *groups)
    return run


def reference_rows(train_pattern: FilePattern, eval_pattern: FilePattern,
                   tf_transform_output) -> List[dict]:
    """The oracle (`p_true` of the simulator, where present) and popularity rows."""
    rows = []
    cols = collect_columns(None, eval_pattern, tf_transform_output,
                           [F.USER_KEY, F.raw(F.P_TRUE)])
    p_true = cols[F.raw(F.P_TRUE)]
    if len(p_true) and (p_true >= 0).all():
        m = ranking_metrics(cols[F.LABEL], p_true, cols[F.USER_KEY])
        rows.append({"name": "oracle", "metrics": main_metrics(m)})
    m = popularity_metrics(train_pattern, eval_pattern, tf_transform_output)
    rows.append({"name": "popularity", "metrics": main_metrics(m)})
    return rows
