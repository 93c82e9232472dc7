"""Trainer module: thin `run_fn` calling `daian_tf.training` and `daian_tf.export`."""

from __future__ import annotations

import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from daian_tf.core import similarity_range as SR
from daian_tf.core.config import config_from_dict
from daian_tf.export.saved_model import export_serving_model
from daian_tf.training.fit import fit_model
from daian_tf.workflows import catalog_for

CONFIG_KEY, RAW_DIR_KEY = "config", "raw_dir"  # custom_config keys (pipeline.py)


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point: fit on the transformed splits, export the serving model.

    DAIAN reads its catalog from `custom_config["raw_dir"]` and its I-2 range from
    `custom_config["sim_range"]`, which `TrainerExecutor` fills in from the input
    artifact (the sample builder's range).
    """
    cfg = config_from_dict(fn_args.custom_config[CONFIG_KEY], "Trainer custom_config")
    sim_range = SR.check_range(fn_args.custom_config.get(SR.REPORT_KEY),
                               "Trainer custom_config['sim_range']")
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    model, _ = fit_model(cfg, tf_transform_output, fn_args.train_files,
                         fn_args.eval_files, log_dir=fn_args.model_run_dir,
                         sim_range=sim_range,
                         catalog=catalog_for(cfg, fn_args.custom_config.get(RAW_DIR_KEY)),
                         checkpoint_dir=fn_args.model_run_dir)
    export_serving_model(model, tf_transform_output, fn_args.serving_model_dir,
                         cfg.samples)
