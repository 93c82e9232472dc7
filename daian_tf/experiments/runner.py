"""`daian experiment`: DIN, DAIAN and its ablations over seeds on one data set.

Steps: simulate the configured world (or take a raw-log directory) → build samples and
transform them once per value of n (`workflows.prepare_data`) → for each variant and
seed: `fit_model` on train, choosing its epochs by validation, then
`evaluation.runs.evaluate_run` on the eval split → the reference rows (oracle and
popularity) → the report (`experiments.report.write_report`: markdown, JSON, PNG
figures). Each finished run is appended to `runs.jsonl`; a rerun resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from daian_tf.core.config import Config, config_from_dict
from daian_tf.core.names import (DAIAN, EVAL, MODEL_NAMES, STAGE2_PLAIN, TRAIN,
                                  VALIDATION)
from daian_tf.data.catalog import read_model_catalog
from daian_tf.evaluation.probe import probe_daian
from daian_tf.evaluation.runs import evaluate_run, reference_rows, user_intent_groups
from daian_tf.experiments.report import write_report
from daian_tf.models.factory import has_intent, needs_catalog
from daian_tf.training.fit import fit_model
from daian_tf.workflows import PreparedData, prepare_data

# variant name -> config overrides (sections model / train)
VARIANTS: Dict[str, dict] = {
    **{name: {"model": {"name": name}} for name in MODEL_NAMES},
    "daian_wo_uim": {"model": {"name": DAIAN, "use_uim": False}},
    "daian_wo_die": {"model": {"name": DAIAN, "use_die": False}},
    "daian_wo_sein": {"model": {"name": DAIAN, "use_sein": False}},
    "daian_wo_three_stage": {"model": {"name": DAIAN}, "train": {"three_stage": False}},
    "daian_plain_label": {"model": {"name": DAIAN}, "train": {"stage2_label": STAGE2_PLAIN}},
}
SWEEP_VARIANT = DAIAN
RUNS_FILE = "runs.jsonl"


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


def _jobs(cfg: Config) -> List[Tuple[str, int, int]]:
    exp, n0 = cfg.experiment, cfg.samples.num_intent_levels
    main = (exp.base_variant, SWEEP_VARIANT)
    ablation_seeds = list(exp.seeds)[:exp.ablation_seeds or len(exp.seeds)]
    jobs = [(v, s, n0) for v in exp.variants
            for s in (exp.seeds if v in main else ablation_seeds)]
    jobs += [(SWEEP_VARIANT, s, n) for n in exp.level_sweep if n != n0
             for s in list(exp.seeds)[:exp.level_sweep_seeds]]
    return jobs


def _plain_history(history: dict) -> dict:
    """Keras history ({metric: [per epoch]}, or {stage: that} for DAIAN) as JSON-able
    floats, rounded: which stage and epoch moved the validation metric."""
    if all(isinstance(v, dict) for v in history.values()):
        return {k: _plain_history(v) for k, v in history.items()}
    return {k: [round(float(x), 5) for x in v] for k, v in history.items()}


def epochs_run(history: dict) -> int:
    """Epochs a fit ran: the length of its loss history, summed over stages (DAIAN)."""
    if all(isinstance(v, dict) for v in history.values()):
        return sum(epochs_run(v) for v in history.values())
    return len(history.get("loss", []))


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

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if raw_dir is None:
        from daian_tf.data.simulator import simulate

        raw_dir = str(out / "raw")
        simulate(raw_dir, cfg.simulation)
    catalog = read_model_catalog(raw_dir)
    jobs = _jobs(cfg)
    data: Dict[int, PreparedData] = {}
    for n in sorted({n for _, _, n in jobs}):
        n_cfg = variant_config(cfg, cfg.experiment.base_variant, cfg.train.seed, n)
        data[n] = prepare_data(raw_dir, str(out / f"data_n{n}"), n_cfg, beam_args)
    groups = {n: user_intent_groups(d.train, d.tf_transform_output,
                                    cfg.experiment.intent_group_fraction)
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
        # the fit chooses by the validation split; the eval split is only scored
        model, history = fit_model(run_cfg, data[n].tf_transform_output, data[n].train,
                                   data[n].validation, sim_range=data[n].sim_range,
                                   catalog=catalog if needs_catalog(run_cfg) else None,
                                   verbose=0)
        seconds = time.time() - start
        trained = data[n].report["splits"][TRAIN]["samples"] * epochs_run(history)
        runs.append({"variant": variant, "seed": seed, "num_levels": n,
                     "train_seconds": round(seconds, 1),
                     "samples_per_second": round(trained / max(seconds, 1e-9), 1),
                     "history": _plain_history(history),
                     **evaluate_run(model, data[n].eval, data[n].tf_transform_output,
                                    has_intent(run_cfg), groups[n])})
        if cfg.experiment.probe and variant == DAIAN:
            runs[-1]["probe"] = probe_daian(model, data[n].eval,
                                            data[n].tf_transform_output)
        with open(done_path, "a") as f:
            f.write(json.dumps(runs[-1]) + "\n")
    wanted = set(jobs)  # runs.jsonl may hold runs of an earlier, larger job list
    runs = [r for r in runs if (r["variant"], r["seed"], r["num_levels"]) in wanted]

    n0 = cfg.samples.num_intent_levels
    results = {
        "config": cfg.to_dict(),
        "dataset": {"raw_dir": str(raw_dir),
                    "train_samples": data[n0].report["splits"][TRAIN]["samples"],
                    "validation_samples":
                        data[n0].report["splits"][VALIDATION]["samples"],
                    "eval_samples": data[n0].report["splits"][EVAL]["samples"],
                    "sim_range": data[n0].sim_range,
                    "specific_users": len(groups[n0][0]),
                    "broad_users": len(groups[n0][1])},
        "runs": runs,
        "reference_rows": reference_rows(data[n0].train, data[n0].eval,
                                         data[n0].tf_transform_output),
        "base_variant": cfg.experiment.base_variant,
        "n_sweep_variant": SWEEP_VARIANT,
    }
    paths = write_report(results, str(out / "report"))
    results["paths"] = {k: str(v) for k, v in paths.items()}
    return results
