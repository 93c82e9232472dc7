"""Trainer module: thin `run_fn` calling `daian_tf.training` and `daian_tf.export`."""

from __future__ import annotations

import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from daian_tf.export.saved_model import export_serving_model
from daian_tf.training.config import config_from_dict
from daian_tf.training.trainer import catalog_for, fit_model


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point: fit on the transformed splits, export the serving model.

    DAIAN reads its catalog from `custom_config["raw_dir"]`; its I-2 range is
    `samples.sim_range` if set, else estimated from the transformed train split.
    """
    cfg = config_from_dict(fn_args.custom_config["config"], "Trainer custom_config")
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    model, _ = fit_model(cfg, tf_transform_output, fn_args.train_files,
                         fn_args.eval_files, log_dir=fn_args.model_run_dir,
                         sim_range=cfg.samples.sim_range,
                         catalog=catalog_for(cfg, {}, fn_args.custom_config.get("raw_dir")),
                         checkpoint_dir=fn_args.model_run_dir)
    export_serving_model(model, tf_transform_output, fn_args.serving_model_dir,
                         cfg.samples)
