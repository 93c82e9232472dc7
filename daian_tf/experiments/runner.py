"""`daian experiment`: DIN, DAIAN and its ablations over seeds on one data set.

Steps: simulate the configured world (or take a raw-log directory) → build samples (once
per value of n) → Transform (once per n) → for each variant and seed: `fit_model`, score the
eval split, and measure AUC / GAUC / logloss, GAUC by intent-diversity group and, for
models with an intent distribution, the JS divergence of p̂ against the intent label for
specific- and broad-intent users → the oracle (`p_true`) and popularity rows → the report
(`daian_tf.experiments.report.write_report`: markdown, JSON, PNG figures).

Specific- and broad-intent users are the users whose mean train intent label has the
lowest / highest entropy (`experiment.intent_group_fraction` of the labelled users each).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from daian_tf.data import features as F
from daian_tf.training.config import Config, config_from_dict

# variant name -> config overrides (sections model / train)
VARIANTS: Dict[str, dict] = {
    "din": {"model": {"name": "din"}},
    "daian": {"model": {"name": "daian"}},
    "daian_wo_uim": {"model": {"name": "daian", "use_uim": False}},
    "daian_wo_die": {"model": {"name": "daian", "use_die": False}},
    "daian_wo_sein": {"model": {"name": "daian", "use_sein": False}},
    "daian_wo_three_stage": {"model": {"name": "daian"}, "train": {"three_stage": False}},
    "daian_plain_label": {"model": {"name": "daian"}, "train": {"stage2_label": "plain"}},
}
SWEEP_VARIANT = "daian"
RUNS_FILE = "runs.jsonl"
DIVERSITY_TOP = 2  # groups 0, 1, 2+


@dataclass
class PreparedData:
    """One built and transformed data set (one value of n)."""

    num_levels: int
    train: str  # glob of transformed train TFRecords
    eval: str
    tf_transform_output: object
    sim_range: List[float]
    report: dict


def variant_config(cfg: Config, variant: str, seed: int,
                   num_levels: Optional[int] = None) -> Config:
    """`cfg` with the overrides of `variant`, the seed and n."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown experiment variant {variant!r}; known: "
                         f"{sorted(VARIANTS)}")
    values = cfg.to_dict()
    for section, overrides in VARIANTS[variant].items():
        values[section] = {**values[section], **overrides}
    values["train"]["seed"] = int(seed)
    if num_levels is not None:
        values["samples"]["num_intent_levels"] = int(num_levels)
    return config_from_dict(values, f"variant {variant}")


def prepare_data(raw_dir: str, out_dir: str, cfg: Config,
                 beam_args: Optional[Sequence[str]] = None) -> PreparedData:
    """Build samples from `raw_dir` and transform them, under `out_dir`."""
    import tensorflow_transform as tft

    from daian_tf.data.sample_builder import run_build_samples
    from daian_tf.data.transform import CFG_SIM_RANGE, transform_custom_config
    from daian_tf.training.trainer import transform_samples

    out = Path(out_dir)
    report = run_build_samples(raw_dir, str(out / "samples"), cfg.samples,
                               list(beam_args or []))
    sim_range = transform_custom_config(cfg, report["sim_range"])[CFG_SIM_RANGE]
    paths = transform_samples(str(out / "samples"), str(out), cfg, sim_range, beam_args)
    return PreparedData(cfg.samples.num_intent_levels, paths["train"], paths["eval"],
                        tft.TFTransformOutput(paths["transform_output"]),
                        list(sim_range), report)


def user_intent_groups(data: PreparedData, fraction: float) -> Tuple[set, set]:
    """(specific, broad) user keys: lowest / highest entropy of each user's mean train
    intent label, `fraction` of the labelled users each."""
    from daian_tf.training.trainer import collect_columns

    cols = collect_columns(None, data.train, data.tf_transform_output,
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
    from daian_tf.metrics.intent import js_divergence

    labelled = cols[F.xf(F.INTENT_MASK)] > 0
    _, first = np.unique(cols[F.REQUEST_KEY], return_index=True)
    rows = np.array(sorted(i for i in first if labelled[i]), dtype=np.int64)
    pred, true = cols["intent"][rows], cols[F.xf(F.INTENT_LABEL)][rows]
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


def evaluate_run(model, data: PreparedData, with_intent: bool,
                 groups: Tuple[set, set]) -> dict:
    """Metrics, GAUC by diversity group and (optionally) the intent block of a model."""
    from daian_tf.evaluation import ranking_metrics
    from daian_tf.metrics.ranking import gauc_by_group
    from daian_tf.training.trainer import collect_columns

    keys = [F.USER_KEY, F.REQUEST_KEY, F.raw(F.INTENT_DIVERSITY),
            F.xf(F.INTENT_LABEL), F.xf(F.INTENT_MASK)]
    cols = collect_columns(model, data.eval, data.tf_transform_output, keys, with_intent)
    metrics = ranking_metrics(cols["label"], cols["score"], cols[F.USER_KEY])
    by_group = gauc_by_group(cols["label"], cols["score"], cols[F.USER_KEY],
                             _diversity_group(cols[F.raw(F.INTENT_DIVERSITY)]))
    run = {"metrics": {k: metrics[k] for k in ("auc", "gauc", "logloss")},
           "gauc_by_diversity": {str(k): v.value for k, v in by_group.items()}}
    if with_intent:
        run["intent"] = _intent_block(cols, *groups)
    return run


def reference_rows(data: PreparedData) -> List[dict]:
    """The oracle (`p_true` of the simulator, where present) and popularity rows."""
    from daian_tf.evaluation import ranking_metrics
    from daian_tf.training.trainer import collect_columns, popularity_metrics

    rows = []
    cols = collect_columns(None, data.eval, data.tf_transform_output,
                           [F.USER_KEY, F.raw(F.P_TRUE)])
    p_true = cols[F.raw(F.P_TRUE)]
    if len(p_true) and (p_true >= 0).all():
        m = ranking_metrics(cols["label"], p_true, cols[F.USER_KEY])
        rows.append({"name": "oracle", "metrics": {k: m[k] for k in
                                                   ("auc", "gauc", "logloss")}})
    m = popularity_metrics(data.train, data.eval, data.tf_transform_output)
    rows.append({"name": "popularity",
                 "metrics": {k: m[k] for k in ("auc", "gauc", "logloss")}})
    return rows


def _jobs(cfg: Config) -> List[Tuple[str, int, int]]:
    exp, n0 = cfg.experiment, cfg.samples.num_intent_levels
    main = (exp.base_variant, SWEEP_VARIANT)
    ablation_seeds = list(exp.seeds)[:exp.ablation_seeds or len(exp.seeds)]
    jobs = [(v, s, n0) for v in exp.variants
            for s in (exp.seeds if v in main else ablation_seeds)]
    jobs += [(SWEEP_VARIANT, s, n) for n in exp.level_sweep if n != n0
             for s in list(exp.seeds)[:exp.level_sweep_seeds]]
    return jobs


def run_experiment(cfg: Config, out_dir: str, raw_dir: Optional[str] = None,
                   beam_args: Optional[Sequence[str]] = None,
                   progress: bool = True) -> dict:
    """Run the experiment of `cfg.experiment`; write its report under `out_dir/report`.

    Args:
        cfg: the full `Config` (simulation: the world when `raw_dir` is None).
        out_dir: working and output directory.
        raw_dir: raw TIR logs to use instead of simulating.
        beam_args: Beam flags of the sample builder and the transform.
        progress: show a progress bar over the training runs.

    Returns:
        The results dict (also `out_dir/report/results.json`), with `paths` of the
        written report files.
    """
    from tqdm import tqdm

    from daian_tf.experiments.report import write_report
    from daian_tf.training.trainer import fit_model, model_catalog

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if raw_dir is None:
        from daian_tf.data.simulator import simulate

        raw_dir = str(out / "raw")
        simulate(raw_dir, cfg.simulation)
    catalog = model_catalog(raw_dir)
    jobs = _jobs(cfg)
    data: Dict[int, PreparedData] = {}
    for n in sorted({n for _, _, n in jobs}):
        n_cfg = variant_config(cfg, cfg.experiment.base_variant, cfg.train.seed, n)
        data[n] = prepare_data(raw_dir, str(out / f"data_n{n}"), n_cfg, beam_args)
    groups = {n: user_intent_groups(d, cfg.experiment.intent_group_fraction)
              for n, d in data.items()}

    # each finished run is appended to runs.jsonl; a rerun skips what is there
    done_path = out / RUNS_FILE
    runs = ([json.loads(line) for line in done_path.read_text().splitlines() if line]
            if done_path.exists() else [])
    done = {(r["variant"], r["seed"], r["num_levels"]) for r in runs}
    for variant, seed, n in tqdm(jobs, desc="experiment runs", disable=not progress):
        if (variant, seed, n) in done:
            continue
        run_cfg = variant_config(cfg, variant, seed, n)
        start = time.time()
        model, _ = fit_model(run_cfg, data[n].tf_transform_output, data[n].train,
                             data[n].eval, sim_range=data[n].sim_range,
                             catalog=catalog if run_cfg.model.name == "daian" else None,
                             verbose=0)
        seconds = time.time() - start
        with_intent = run_cfg.model.name == "daian" and run_cfg.model.use_uim
        runs.append({"variant": variant, "seed": seed, "num_levels": n,
                     "train_seconds": round(seconds, 1),
                     **evaluate_run(model, data[n], with_intent, groups[n])})
        with open(done_path, "a") as f:
            f.write(json.dumps(runs[-1]) + "\n")
    wanted = set(jobs)  # runs.jsonl may hold runs of an earlier, larger job list
    runs = [r for r in runs if (r["variant"], r["seed"], r["num_levels"]) in wanted]

    n0 = cfg.samples.num_intent_levels
    results = {
        "config": cfg.to_dict(),
        "dataset": {"raw_dir": str(raw_dir),
                    "train_samples": data[n0].report["splits"]["train"]["samples"],
                    "eval_samples": data[n0].report["splits"]["eval"]["samples"],
                    "sim_range": data[n0].sim_range,
                    "specific_users": len(groups[n0][0]),
                    "broad_users": len(groups[n0][1])},
        "runs": runs,
        "reference_rows": reference_rows(data[n0]),
        "base_variant": cfg.experiment.base_variant,
        "n_sweep_variant": SWEEP_VARIANT,
    }
    paths = write_report(results, str(out / "report"))
    results["paths"] = {k: str(v) for k, v in paths.items()}
    return results
