"""Each fit keeps its best epoch: Keras' `EarlyStopping` on the fit's validation metric,
with the weights the fit starts from among the candidates.

The metric is read on the fit's `validation_data`, which every route of the project fills
with the validation split (`names.VALIDATION`), never with the eval split that is
reported on. `train.restore_best_epoch` (default on): a fit (DIN's, each of DAIAN's
stages) ends with the weights of its best epoch by that metric — stage 1 by its KL loss,
the CTR fits by AUC (`names.BEST_EPOCH_MONITOR`); `train.patience` > 0 also stops a fit
after that many epochs without improvement. A fit that starts from trained weights
(stages 2 and 3, any warm start) first evaluates them ("epoch 0"): if no epoch beats its
start, it ends where it started.
"""

from __future__ import annotations

from typing import List

import keras

from daian_tf.core.names import BEST_EPOCH_MONITOR, CTR_FIT

_VAL = "val_"


class BestEpoch(keras.callbacks.EarlyStopping):
    """`EarlyStopping(restore_best_weights=...)` whose candidates include the starting
    weights when `start_data` (the fit's validation data) is given."""

    def __init__(self, start_data=None, **kwargs):
        super().__init__(**kwargs)
        self.start_data = start_data

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = None  # one instance per fit; never a previous fit's best
        if self.start_data is None:
            return
        data = self.start_data  # as fit's validation_data: a dataset or (x, y[, w])
        args = data if isinstance(data, tuple) else (data,)
        results = self.model.evaluate(*args, verbose=0, return_dict=True)
        key = self.monitor[len(_VAL):] if self.monitor.startswith(_VAL) else self.monitor
        self.best, self.best_epoch = float(results[key]), -1  # reported as "epoch 0"
        if self.restore_best_weights:
            self.best_weights = self.model.get_weights()
        print(f"start (epoch 0): {self.monitor}: {self.best:.4f}", flush=True)


def best_epoch_callbacks(train_cfg, epochs: int, kind: str = CTR_FIT,
                         start_data=None) -> List[keras.callbacks.Callback]:
    """The callback that restores the best epoch (and stops early) for a fit of
    `epochs` epochs; `kind` is `names.STAGE1` (the KL fit) or `names.CTR_FIT`;
    `start_data`: the validation data, when the starting weights are a candidate;
    [] when neither restoring nor stopping is configured."""
    if kind not in BEST_EPOCH_MONITOR:
        raise ValueError(f"kind must be one of {list(BEST_EPOCH_MONITOR)}, got {kind!r}")
    if not train_cfg.restore_best_epoch and train_cfg.patience == 0:
        return []
    monitor, mode = BEST_EPOCH_MONITOR[kind]
    return [BestEpoch(start_data=start_data if train_cfg.restore_best_epoch else None,
                      monitor=monitor, mode=mode,
                      # no patience: never stop (the start, "epoch 0", counts too)
                      patience=train_cfg.patience or epochs + 1,
                      restore_best_weights=train_cfg.restore_best_epoch, verbose=1)]
