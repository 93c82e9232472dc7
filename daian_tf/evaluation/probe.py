"""What a trained DAIAN's blocks do on a split (`probe_daian`).

Run eagerly over the split with hooks on the model's own layers (nothing is retrained
or rebuilt; without a knock-out the scores are the model's):

* **By similarity level** of the target (the I-2 levels of s_sem = cos(m_tr, m_tg)):
  samples, CTR, mean prediction; IA2N's scales (Eq. 17–18: the mean |w_exp| and |w_imp|
  over their dimensions, averaged over the level's samples, and their std across
  samples: a gate that adapts varies across samples and levels); SEIN's norm ratio `r`
  (Eq. 13: the weight of the collaborative part e_col against the semantic bin
  embedding e_sem).
* **UIM**: the mean entropy of p̂ per request and how much p̂ varies across requests
  (the mean over levels of its std), beside the same for the intent labels.
* **Knock-outs**: eval AUC and GAUC when one block's output is replaced by its mean
  over the batch (`o_din`, `o_exp`, `o_imp`, `e_sim`, `s_sem`), or UIM's p̂ by the
  uniform distribution (`uniform_intent`): how much the prediction head leans on each.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Optional, Sequence

import numpy as np
from keras import ops

from daian_tf.core import features as F
from daian_tf.core.similarity_range import level_index
from daian_tf.data.dataset import FilePattern, make_dataset
from daian_tf.evaluation.tables import ranking_metrics
from daian_tf.metrics.intent import js_divergence
from daian_tf.models import serving_input_keys

KNOCKOUTS = ("o_din", "o_exp", "o_imp", "e_sim", "s_sem", "uniform_intent")


def _batch_mean(x):
    return ops.broadcast_to(ops.mean(x, axis=0, keepdims=True), ops.shape(x))


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(x), axis=-1))


@contextmanager
def _hooks(model, record: Dict[str, list], knockout: Optional[str]):
    """Patch the model's layers' `call` (and `predict_intent`) on the instance."""
    sim, adaptive, din = model.similarity, model.adaptive, model.din_pooling
    originals = {"sim": sim.call, "adaptive": adaptive.call, "din": din.call,
                 "intent": model.predict_intent}

    def sim_call(trigger_id_emb, target_id_emb, trigger_mm, target_mm, training=None):
        e_sim, s_sem = originals["sim"](trigger_id_emb, target_id_emb, trigger_mm,
                                        target_mm, training=training)
        e_col = sim.project(trigger_id_emb) * sim.project(target_id_emb)
        bins = level_index(s_sem[:, 0], *sim.sim_range, sim.num_bins, xp=ops)
        e_sem = sim.bin_table(ops.cast(bins, "int32"))
        record["s_sem"].append(np.asarray(s_sem[:, 0]))
        record["r"].append(np.asarray(_norm(e_col) / (_norm(e_col) + _norm(e_sem) + 1e-8)))
        if knockout == "e_sim":
            e_sim = _batch_mean(e_sim)
        if knockout == "s_sem":
            s_sem = _batch_mean(s_sem)
        return e_sim, s_sem

    def adaptive_call(similarity, intent, explicit, implicit, training=None):
        w = adaptive.gate(ops.concatenate([similarity, intent], axis=-1))
        for layer in adaptive.mlp_layers:
            w = layer(w)
        w = np.asarray(adaptive.weight_layer(w))
        k = adaptive.explicit_dim
        record["w_exp"].append(np.abs(w[:, :k]).mean(axis=1))
        record["w_imp"].append(np.abs(w[:, k:]).mean(axis=1))
        o_exp, o_imp = originals["adaptive"](similarity, intent, explicit, implicit,
                                             training=training)
        if knockout == "o_exp":
            o_exp = _batch_mean(o_exp)
        if knockout == "o_imp":
            o_imp = _batch_mean(o_imp)
        return o_exp, o_imp

    def din_call(*args, **kwargs):
        pooled = originals["din"](*args, **kwargs)
        return _batch_mean(pooled) if knockout == "o_din" else pooled

    def predict_intent(inputs, training=None):
        p = originals["intent"](inputs, training=training)
        return ops.ones_like(p) / model.num_levels if knockout == "uniform_intent" else p

    sim.call, adaptive.call, din.call = sim_call, adaptive_call, din_call
    model.predict_intent = predict_intent
    try:
        yield
    finally:
        for obj, name in ((sim, "call"), (adaptive, "call"), (din, "call"),
                          (model, "predict_intent")):
            del obj.__dict__[name]  # back to the class's method


def _run(model, pattern, tf_transform_output, knockout, batch_size, intent_keys):
    keys = serving_input_keys(model)
    ds = make_dataset(pattern, tf_transform_output, batch_size, shuffle=False,
                      input_keys=sorted(set(keys) | {F.USER_KEY, F.REQUEST_KEY,
                                                     *intent_keys}))
    record: Dict[str, list] = defaultdict(list)
    with _hooks(model, record, knockout):
        for inputs, label in ds:
            batch = {k: inputs[k] for k in keys}
            record["score"].append(np.asarray(model(batch, training=False)).reshape(-1))
            record["label"].append(label.numpy().reshape(-1))
            for k in (F.USER_KEY, F.REQUEST_KEY, *intent_keys):
                record[k].append(inputs[k].numpy())
            if knockout is None:
                record["p_hat"].append(np.asarray(model.predict_intent(batch)))
    return {k: np.concatenate(v) for k, v in record.items()}


def _entropy(p):
    p = np.clip(p, 1e-12, 1.0)
    return float(np.mean(-np.sum(p * np.log(p), axis=1)))


def probe_daian(model, pattern: FilePattern, tf_transform_output,
                knockouts: Sequence[str] = KNOCKOUTS, batch_size: int = 2048) -> dict:
    """The probe of the module docstring on the split `pattern`."""
    for k in knockouts:
        if k not in KNOCKOUTS:
            raise ValueError(f"unknown knock-out {k!r}; known: {KNOCKOUTS}")
    if not (model.cfg.use_sein and model.cfg.use_die):
        raise ValueError("probe_daian needs a DAIAN with SEIN and DIE (use_sein, use_die)")
    label_key, mask_key = F.xf(F.INTENT_LABEL), F.xf(F.INTENT_MASK)
    base = _run(model, pattern, tf_transform_output, None, batch_size,
                (label_key, mask_key))
    n = model.num_levels
    lo, hi = model.sim_range
    level = level_index(base["s_sem"].astype(np.float64), lo, hi, n).astype(np.int64)
    by_level = []
    for k in range(n):
        m = level == k
        row = {"level": k, "samples": int(m.sum())}
        if m.any():
            row.update({name: round(float(np.mean(base[key][m])), 4) for name, key in
                        (("ctr", "label"), ("mean_prediction", "score"),
                         ("w_exp", "w_exp"), ("w_imp", "w_imp"), ("r", "r"))})
            row.update({"w_exp_std": round(float(np.std(base["w_exp"][m])), 4),
                        "w_imp_std": round(float(np.std(base["w_imp"][m])), 4)})
        by_level.append(row)

    _, first = np.unique(base[F.REQUEST_KEY], return_index=True)
    labelled = first[base[mask_key][first] > 0]
    p_hat, y_int = base["p_hat"][labelled], base[label_key][labelled]
    uim = {"requests": int(len(labelled)),
           "entropy_p_hat": round(_entropy(p_hat), 4),
           "entropy_label": round(_entropy(y_int), 4),
           "std_across_requests_p_hat": round(float(p_hat.std(axis=0).mean()), 4),
           "std_across_requests_label": round(float(y_int.std(axis=0).mean()), 4),
           "js_p_hat_vs_label": round(float(js_divergence(p_hat, y_int).mean()), 4),
           "js_mean_label_vs_label": round(float(js_divergence(
               np.broadcast_to(y_int.mean(axis=0), y_int.shape), y_int).mean()), 4)}

    def metrics(run):
        m = ranking_metrics(run["label"].astype(np.int64), run["score"], run[F.USER_KEY])
        return {k: round(float(m[k]), 4) for k in ("auc", "gauc")}

    knocked = {"none": metrics(base)}
    for k in knockouts:
        knocked[k] = metrics(_run(model, pattern, tf_transform_output, k, batch_size, ()))
    return {"by_level": by_level, "uim": uim, "knockouts": knocked}
