"""Trainer module: one `run_fn` for every Trainer of the pipeline, the stage named in
`custom_config["stage"]`; it calls `daian_tf.training` and `daian_tf.export`.

- `stage1` / `stage2` / `stage3`: one of DAIAN's stages (`training.stages.STAGE_FUNCTIONS`),
  started from the `base_model` artifact's warm-start weights when the Trainer has one
  (the previous stage's `Model`, or the latest blessed model);
- `full`: the whole fit of `model.name` (`training.fit.fit_model`: DIN, the baseline).

Every Trainer fits on the `train` split and chooses its epochs by its `eval_files`, the
`validation` split (`EvalArgs(splits=["validation"])`); the `eval` split is refused there.

Every Trainer writes into its `Model` artifact the serving SavedModel
(`<uri>/Format-Serving`: TFX requires it; any stage's model can be served or evaluated)
and its weights and vocabularies (`<uri>/warm_start/`, `training.warm_start`), which the
next stage and the next day's run start from.
DAIAN reads its catalog from `custom_config["raw_dir"]` and its I-2 range from
`custom_config["sim_range"]`, which `TrainerExecutor` fills in from the input artifact
(the sample builder's range).
"""

from __future__ import annotations

import os
from typing import Optional

import keras
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from daian_tf.core import similarity_range as SR
from daian_tf.core.config import config_from_dict
from daian_tf.core.names import EVAL, STAGES, VALIDATION
from daian_tf.export.saved_model import export_serving_model
from daian_tf.training.fit import build_for_data, fit_model
from daian_tf.training.stages import STAGE_FUNCTIONS, carry_over, stage_runs
from daian_tf.training.warm_start import save_warm_start
from daian_tf.workflows import catalog_for

# custom_config keys (pipeline.py)
CONFIG_KEY, RAW_DIR_KEY, STAGE_KEY = "config", "raw_dir", "stage"
FULL = "full"  # the whole fit of model.name
TRAINER_STAGES = STAGES + (FULL,)
WARM_START_DIR = "warm_start"  # inside a Model artifact, beside Format-Serving


def warm_start_dir(serving_model_dir: str) -> str:
    """The warm-start directory of the Model artifact whose serving directory this is
    (TFX's layout: `<artifact uri>/Format-Serving`)."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), WARM_START_DIR)


def _base_weights(fn_args: FnArgs) -> Optional[str]:
    if not fn_args.base_model:
        return None
    path = warm_start_dir(fn_args.base_model)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"the base model {os.path.dirname(fn_args.base_model)} has no {WARM_START_DIR}/ "
            f"directory: was it written by this Trainer module?")
    return path


def _validation_files(fn_args: FnArgs) -> list:
    """The Trainer's `eval_files`, which its fits choose by: the validation split
    (pipeline.py's `eval_args`); refused when they reach into the eval split, the one
    the Evaluators report and gate on."""
    files = [fn_args.eval_files] if isinstance(fn_args.eval_files, str) \
        else list(fn_args.eval_files)
    held_out = f"Split-{EVAL}"
    leaked = [f for f in files if held_out in f.replace(os.sep, "/").split("/")]
    if leaked:
        raise ValueError(f"the Trainer's eval_args name the held-out {EVAL!r} split "
                         f"({leaked}); a fit chooses its epochs by the {VALIDATION!r} "
                         f"split: EvalArgs(splits=[{VALIDATION!r}])")
    return files


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point: the stage of `custom_config["stage"]`."""
    custom = fn_args.custom_config
    cfg = config_from_dict(custom[CONFIG_KEY], "Trainer custom_config")
    stage = custom.get(STAGE_KEY, FULL)
    if stage not in TRAINER_STAGES:
        raise ValueError(f"Trainer custom_config['stage'] must be one of "
                         f"{list(TRAINER_STAGES)}, got {stage!r}")
    sim_range = SR.check_range(custom.get(SR.REPORT_KEY),
                               "Trainer custom_config['sim_range']")
    validation_files = _validation_files(fn_args)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    catalog = catalog_for(cfg, custom.get(RAW_DIR_KEY))
    initial = _base_weights(fn_args)
    if stage == FULL:
        if initial:
            raise ValueError("the full fit takes no base_model; warm-start DAIAN's stages")
        model, _ = fit_model(cfg, tf_transform_output, fn_args.train_files,
                             validation_files, log_dir=fn_args.model_run_dir,
                             sim_range=sim_range, catalog=catalog)
    else:
        model = build_for_data(cfg, tf_transform_output, sim_range, catalog)
        args = (model, fn_args.train_files, validation_files, tf_transform_output,
                cfg.train)
        if stage_runs(model, cfg.train, stage):
            STAGE_FUNCTIONS[stage](
                *args, initial_weights=initial,
                callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])
        else:
            print(f"{stage}: nothing to train under this config; the base model's "
                  f"weights are carried over", flush=True)
            carry_over(model, fn_args.train_files, tf_transform_output, cfg.train,
                       initial)
    save_warm_start(model, tf_transform_output, warm_start_dir(fn_args.serving_model_dir))
    export_serving_model(model, tf_transform_output, fn_args.serving_model_dir,
                         cfg.samples)
