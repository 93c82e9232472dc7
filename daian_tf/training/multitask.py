"""Multi-task fitting of a model with an intent head: the CTR loss plus a weighted intent
loss, in one `model.fit` (IntentRec's hierarchical multi-task learning, DUPN's shared
representation trained by several tasks).

The intent loss is `KL(y_int ‖ p̂)` of the model's `predict_intent` against the request's
intent label (`intent_label`, DATA.md), averaged over the labelled samples of the batch
(`intent_mask`; a batch without any adds 0). The label is a training target only, never an
input: the wrapper reads it from the batch beside the model's inputs, and the model (what
is exported and served) never sees it.

Under a tf.distribute strategy (multi-worker training) the intent term is scaled by
1 / replicas in sync, as Keras scales its compiled loss: each replica's gradients are
summed, so the two terms keep their weights whatever the number of workers.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import ops

from daian_tf.core import features as F
from daian_tf.core.signatures import OUTPUT_CTR, OUTPUT_INTENT

INTENT_LABEL_XF, INTENT_MASK_XF = F.xf(F.INTENT_LABEL), F.xf(F.INTENT_MASK)


def masked_intent_kl(label, mask, predicted):
    """Mean `KL(label ‖ predicted)` over the samples whose `mask` is 1; 0 when none."""
    eps = 1e-7
    label = ops.cast(label, "float32")
    predicted = ops.cast(predicted, "float32")
    kl = ops.sum(label * (ops.log(ops.clip(label, eps, 1.0))
                          - ops.log(ops.clip(predicted, eps, 1.0))), axis=-1)
    mask = ops.reshape(ops.cast(mask, "float32"), (-1,))
    return ops.sum(kl * mask) / ops.maximum(ops.sum(mask), 1.0)


class IntentMultiTaskModel(keras.Model):
    """Fits `model` (which has `input_keys` and `predict_intent`) on the CTR loss plus
    `intent_weight` × `masked_intent_kl`. Shares the model's layers: fitting this model
    trains it. Its inputs are the model's plus the intent label and mask; its output is
    `{"ctr": ŷ, "intent": p̂}` from one forward pass (`model.ctr_and_intent` when the
    model has it, so that the shared request side runs once a step; else its call and
    `predict_intent`); the loss and the metrics see the CTR output."""

    def __init__(self, model: keras.Model, intent_weight: float, **kwargs):
        kwargs.setdefault("name", "intent_multitask_model")
        super().__init__(**kwargs)
        self.model = model
        self.intent_weight = float(intent_weight)
        self.input_keys: Sequence[str] = (list(model.input_keys)
                                          + [INTENT_LABEL_XF, INTENT_MASK_XF])

    def call(self, inputs, training=None):
        x = {k: inputs[k] for k in self.model.input_keys}
        both = getattr(self.model, "ctr_and_intent", None)
        if both is not None:
            if not self.model.built:
                # the one pass calls the model's layers, not the model: build it once
                # through its own __call__, else Keras leaves it unbuilt (and the
                # Trainer cannot save its variables for the warm start)
                self.model(x, training=training)
            ctr, intent = both(x, training=training)
        else:
            ctr = self.model(x, training=training)
            intent = self.model.predict_intent(x, training=training)
        return {OUTPUT_CTR: ctr, OUTPUT_INTENT: intent}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred[OUTPUT_CTR],
                                    sample_weight=sample_weight, training=training)
        kl = masked_intent_kl(x[INTENT_LABEL_XF], x[INTENT_MASK_XF],
                              y_pred[OUTPUT_INTENT])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:  # Keras' compiled loss (`loss`) is scaled so already
            kl = kl / replicas
        return loss + self.intent_weight * kl

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[OUTPUT_CTR], sample_weight)


def with_intent_loss(model: keras.Model) -> keras.Model:
    """What `model.fit` is called on: `model` wrapped in `IntentMultiTaskModel` when it
    has an intent head and a positive `intent_loss_weight` (IntentRec, DUPN), else
    `model` itself."""
    weight = float(getattr(model, "intent_loss_weight", 0.0))
    return IntentMultiTaskModel(model, weight) if weight > 0 else model
