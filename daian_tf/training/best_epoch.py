"""Each fit keeps its best epoch: Keras' `EarlyStopping` on the fit's validation metric,
with the weights the fit starts from among the candidates.

The metric is read on the fit's `validation_data`, which every route of the project fills
with the validation split (`names.VALIDATION`), never with the eval split that is
reported on. `train.restore_best_epoch` (default on): a fit (DIN's, each of DAIAN's
stages) ends with the weights of its best epoch by that metric — stage 1 by its KL loss,
the CTR fits by AUC (`names.BEST_EPOCH_MONITOR`); `train.patience` > 0 also stops a fit
after that many epochs without improvement. DAIAN's stage 2 fits a model fed the
ground-truth intent, which the exported model never sees: it is chosen by the exported
model's validation AUC with p̂ (`ServedAUC`, `val_served_auc`). A fit that starts from
trained weights (stages 2 and 3, any warm start) first scores them ("epoch 0"): if no
epoch beats its start, it ends where it started.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import keras

from daian_tf.core.names import BEST_EPOCH_MONITOR, CTR_FIT

SERVED_AUC = "val_served_auc"  # ServedAUC's key in the epoch logs and the history
_VAL = "val_"


class ServedAUC(keras.callbacks.Callback):
    """At each epoch's end, the AUC of `served` on `data` as `logs["val_served_auc"]`.

    For a fit whose model reads what the served model does not: DAIAN's stage 2 fits
    `LabelIntentModel`, which takes the request's ground-truth intent (built from the
    clicks of the request itself); the model that is exported reads UIM's p̂ instead.
    Choosing stage 2's epoch by the served model's AUC chooses by what is served.

    Args:
        served: the model to score (its inputs are `data`'s).
        data: `(inputs, label)` batches of the validation split.
    """

    def __init__(self, served: keras.Model, data):
        super().__init__()
        self.served, self.data = served, data

    def score(self) -> float:
        auc = keras.metrics.AUC()
        for x, y in self.data:
            auc.update_state(y, self.served(x, training=False))
        return float(auc.result())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[SERVED_AUC] = self.score()


class BestEpoch(keras.callbacks.EarlyStopping):
    """`EarlyStopping(restore_best_weights=...)` whose candidates include the starting
    weights when `start_data` (the fit's validation data) or `start_score` (a function
    returning the monitored value of the current weights) is given."""

    def __init__(self, start_data=None, start_score: Optional[Callable[[], float]] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.start_data, self.start_score = start_data, start_score

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = None  # one instance per fit; never a previous fit's best
        if self.start_score is not None:
            self.best = float(self.start_score())
        elif self.start_data is not None:
            data = self.start_data  # as fit's validation_data: a dataset or (x, y[, w])
            args = data if isinstance(data, tuple) else (data,)
            results = self.model.evaluate(*args, verbose=0, return_dict=True)
            key = (self.monitor[len(_VAL):] if self.monitor.startswith(_VAL)
                   else self.monitor)
            self.best = float(results[key])
        else:
            return
        self.best_epoch = -1  # reported as "epoch 0"
        if self.restore_best_weights:
            self.best_weights = self.model.get_weights()
        print(f"start (epoch 0): {self.monitor}: {self.best:.4f}", flush=True)


def best_epoch_callbacks(train_cfg, epochs: int, kind: str = CTR_FIT,
                         start_data=None, served: Optional[Tuple] = None
                         ) -> List[keras.callbacks.Callback]:
    """The callbacks that restore the best epoch (and stop early) for a fit of `epochs`
    epochs; [] when neither restoring nor stopping is configured.

    Args:
        kind: `names.STAGE1` (the KL fit) or `names.CTR_FIT`.
        start_data: the validation data, when the starting weights are a candidate.
        served: `(model, validation batches)`: choose by that model's AUC on them
            (`ServedAUC`, `val_served_auc`) instead of the fitted model's metric; the
            start, when a candidate, is scored the same way.
    """
    if kind not in BEST_EPOCH_MONITOR:
        raise ValueError(f"kind must be one of {list(BEST_EPOCH_MONITOR)}, got {kind!r}")
    if not train_cfg.restore_best_epoch and train_cfg.patience == 0:
        return []
    monitor, mode = BEST_EPOCH_MONITOR[kind]
    first, start_score = [], None
    if served is not None:
        scorer = ServedAUC(*served)
        first, monitor, mode = [scorer], SERVED_AUC, "max"
        if start_data is not None:
            start_score, start_data = scorer.score, None
    restore = train_cfg.restore_best_epoch
    return first + [BestEpoch(start_data=start_data if restore else None,
                              start_score=start_score if restore else None,
                              monitor=monitor, mode=mode,
                              # no patience: never stop (the start, "epoch 0", counts too)
                              patience=train_cfg.patience or epochs + 1,
                              restore_best_weights=restore, verbose=1)]
