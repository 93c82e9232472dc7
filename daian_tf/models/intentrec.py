"""IntentRec-style model (Oh et al., "IntentRec: Predicting User Session Intent with
Hierarchical Multi-Task Learning", arXiv 2408.05353), adapted to trigger-induced
recommendation (docs/models-intentrec-dupn.md).

IntentRec estimates the user's latent intent from short- and long-term implicit signals
and feeds the intent prediction into the next-item prediction, both tasks trained
together (hierarchical multi-task learning). Here the intent is the request's intent
label of DATA.md §2 (the distribution of its clicks over the n trigger–target similarity
levels), the item task is the CTR of a (request, target) pair, and the trigger, which
defines the request, is an input of the intent head:

    E_u, M          = the history `[id ‖ category ‖ brand]` (B, T, 3D) and its mask
    M_s             = the last k valid steps of M (`short_term_steps`; histories are
                      padded at the end, so these are the steps [L_b − k, L_b))
    s               = ReLU(W_s · mean_{j ∈ M_s} E_u[j] + b_s)       short-term encoding
    l               = ReLU(W_l · mean_{j ∈ M} E_u[j] + b_l)         long-term encoding
    a_tr            = DIN pool(E_u; e_trq)                          trigger-queried history
    p̂              = softmax(W_p · MLP([e_u ‖ e_trq ‖ s ‖ l ‖ a_tr]) + b_p)   ∈ Δ^n
    v_int           = W_v p̂ + b_v                                   intent vector
    o_din           = DIN pool(E_u; e_tgq)                          target attention
    ŷ              = σ(MLP([e_u ‖ e_tr ‖ e_tg ‖ o_din ‖ s ‖ l ‖ v_int]))

    loss = BCE(y, ŷ) + λ · KL(y_int ‖ p̂)  over the requests with a click
           (λ = `intent_loss_weight`, training/multitask.py)

Choices (each documented in docs/models-intentrec-dupn.md):
- the encoders are masked mean pools followed by a Dense (IntentRec uses Transformer
  encoders; a mean keeps the model small on 2-CPU runs and makes the short/long-term
  split exact: the short-term encoding reads only the last k valid steps);
- p̂ is fed to the CTR tower as `v_int` (a learned linear map of the distribution, the
  same role as DAIAN's `p̂ · T_level`), and the CTR loss's gradient flows back into
  the intent head (joint training, no stop-gradient), as IntentRec trains end to end;
- the CTR network and the intent head share the embedding tables (one
  `FeatureEmbedding`), the "shared bottom" of hierarchical multi-task learning;
- everything but o_din and the target embeddings reads the request only, so p̂ is a
  request-level output (one value per request, whatever the candidate).

Inputs: `emb.feature_input_keys(user_columns)`, the same transformed features as DIN.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

import keras
from keras import ops

from daian_tf.core.names import CTR_OUTPUT, INTENTREC
from daian_tf.layers import embedding as emb
from daian_tf.layers.attention import DinAttentionPooling
from daian_tf.layers.sequence import MaskedMeanPooling, recent_steps_mask


def intentrec_input_keys(user_columns: Sequence[str]) -> List[str]:
    """The transformed features IntentRec reads (DIN's)."""
    return emb.feature_input_keys(user_columns)


@keras.saving.register_keras_serializable(package="daian")
class IntentRec(keras.Model):
    """The IntentRec-style CTR model (see the module docstring).

    Args:
        model_cfg: `ModelConfig` (embedding_dim, embedding_l2, hidden_units,
            attention_units, attention_softmax, dropout, intent_hidden_units,
            intent_dim, short_term_steps, sequence_units, intent_loss_weight).
        vocab_sizes: table rows per vocabulary name (`transform.vocab_sizes`).
        user_columns: the user profile columns.
        num_levels: n, the width of the intent label (`samples.num_intent_levels`).

    Call arguments:
        inputs: dict of transformed features, at least `input_keys`.
        training: Keras' flag.

    Returns:
        `(B, 1)` click probabilities.
    """

    def __init__(self, model_cfg, vocab_sizes: Mapping[str, int],
                 user_columns: Sequence[str], num_levels: int, **kwargs):
        kwargs.setdefault("name", INTENTREC)
        super().__init__(**kwargs)
        if int(num_levels) < 2:
            raise ValueError(f"IntentRec: num_levels must be >= 2, got {num_levels}")
        c = model_cfg
        self.cfg = c
        self.user_columns = tuple(user_columns)
        self.num_levels = int(num_levels)
        self.short_term_steps = int(c.short_term_steps)
        self.intent_loss_weight = float(c.intent_loss_weight)

        self.embedding = emb.FeatureEmbedding(vocab_sizes, self.user_columns,
                                              c.embedding_dim, c.embedding_l2,
                                              name="embedding")
        self.mean_pool = MaskedMeanPooling(name="masked_mean")
        self.short_encoder = keras.layers.Dense(c.sequence_units, activation="relu",
                                                name="short_term_encoder")
        self.long_encoder = keras.layers.Dense(c.sequence_units, activation="relu",
                                               name="long_term_encoder")
        self.trigger_pooling = DinAttentionPooling(hidden_units=c.attention_units,
                                                   use_softmax=c.attention_softmax,
                                                   name="trigger_attention")
        self.intent_hidden = [keras.layers.Dense(u, activation="relu",
                                                 name=f"intent_hidden_{i}")
                              for i, u in enumerate(c.intent_hidden_units)]
        self.intent_logits = keras.layers.Dense(self.num_levels, name="intent_logits")
        self.intent_vector = keras.layers.Dense(c.intent_dim, name="intent_vector")
        self.din_pooling = DinAttentionPooling(hidden_units=c.attention_units,
                                               use_softmax=c.attention_softmax,
                                               name="din_attention")
        self.head = [keras.layers.Dense(u, activation="relu", name=f"head_{i}")
                     for i, u in enumerate(c.hidden_units)]
        self.head_dropout = (keras.layers.Dropout(c.dropout, name="head_dropout")
                             if c.dropout > 0 else None)
        self.output_layer = keras.layers.Dense(1, activation="sigmoid", name=CTR_OUTPUT)

    @property
    def input_keys(self) -> List[str]:
        """The transformed features the model reads at serving time."""
        return intentrec_input_keys(self.user_columns)

    # --- request side -------------------------------------------------------------
    def _encode(self, e) -> Tuple[object, object]:
        short_mask = recent_steps_mask(e[emb.MASK], self.short_term_steps)
        short = self.short_encoder(self.mean_pool(e[emb.HISTORY], mask=short_mask))
        long = self.long_encoder(self.mean_pool(e[emb.HISTORY], mask=e[emb.MASK]))
        return short, long

    def encode(self, inputs: Mapping, training=None) -> Tuple[object, object]:
        """The short-term `s` (the last `short_term_steps` valid steps) and long-term
        `l` (the whole history) encodings, each `(B, sequence_units)`."""
        return self._encode(self.embedding(inputs))

    def _intent(self, e, short, long, training=None):
        pooled = self.trigger_pooling(e[emb.TRIGGER_QUERY], e[emb.HISTORY],
                                      mask=e[emb.MASK])
        h = ops.concatenate([e[emb.USER], e[emb.TRIGGER_QUERY], short, long, pooled],
                            axis=-1)
        for layer in self.intent_hidden:
            h = layer(h)
        return ops.softmax(self.intent_logits(h), axis=-1)

    def predict_intent(self, inputs: Mapping, training=None):
        """p̂ `(B, n)`: the request's predicted intent distribution (rows sum to 1)."""
        e = self.embedding(inputs)
        short, long = self._encode(e)
        return self._intent(e, short, long, training=training)

    # --- forward ------------------------------------------------------------------
    def call(self, inputs, training=None):
        return self.ctr_and_intent(inputs, training=training)[0]

    def ctr_and_intent(self, inputs: Mapping, training=None):
        """`(ŷ (B, 1), p̂ (B, n))` from one pass (the multi-task fit's forward)."""
        e = self.embedding(inputs)
        short, long = self._encode(e)
        intent = self._intent(e, short, long, training=training)
        v_int = self.intent_vector(intent)
        pooled = self.din_pooling(e[emb.TARGET_QUERY], e[emb.HISTORY], mask=e[emb.MASK])
        x = ops.concatenate([e[emb.USER], e[emb.TRIGGER], e[emb.TARGET], pooled,
                             short, long, v_int], axis=-1)
        for layer in self.head:
            x = layer(x)
            if self.head_dropout is not None:
                x = self.head_dropout(x, training=training)
        return self.output_layer(x), intent


def build_intentrec(cfg, vocab_sizes: Mapping[str, int]) -> IntentRec:
    """IntentRec from the full `Config`: n is `samples.num_intent_levels`, the width of
    the intent label the sample builder writes (as for DAIAN)."""
    return IntentRec(cfg.model, vocab_sizes, tuple(cfg.samples.user_columns),
                     cfg.samples.num_intent_levels)
