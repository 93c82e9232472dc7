"""DUPN-style model (Ni et al., "Perceive Your Users in Depth: Learning Universal User
Representations from Multiple E-commerce Tasks", KDD 2018), adapted to trigger-induced
recommendation (docs/models-intentrec-dupn.md).

DUPN models the behaviour sequence with an LSTM whose steps carry the item's content,
the behaviour type and the time, pools the states with an attention queried by the
request (in Taobao search: the query and the user), and shares the resulting user
representation across several task heads trained together. Here the request's query is
the trigger, and the tasks are the CTR of the target and the request's intent (the
distribution of DATA.md §2's `intent_label` over n similarity levels):

    x_j    = [e_id ‖ e_cat ‖ e_brand](j) ‖ e_beh(b_j) ‖ e_time(τ_j)   step j, M_j its mask
             (b_j: `hist_behavior` id; τ_j: `hist_time_bucket`, the log2 bucket of
             `hist_time_delta`, data/transform.py)
    H      = LSTM(x; M)                  (B, T, U), masked: padded steps are skipped
    h_last = H at the last valid step    (zeros without history)
    a_tr   = DIN pool(H; W_tr e_trq)     attention over the states, trigger as query
    r      = ReLU(W_r [a_tr ‖ e_u ‖ h_last] + b_r)     the shared user representation
    p̂     = softmax(W_p · MLP(r) + b_p) ∈ Δ^n          intent task
    a_tg   = DIN pool(H; W_tg e_tgq)     attention over the states, target as query
    ŷ     = σ(MLP([r ‖ e_tr ‖ e_tg ‖ a_tg]))           CTR task

    loss = BCE(y, ŷ) + λ · KL(y_int ‖ p̂)  over the requests with a click
           (λ = `intent_loss_weight`, training/multitask.py)

Choices (docs/models-intentrec-dupn.md):
- `r` is REQUEST-side: DUPN's attention query is the request (search query and user),
  not the candidate, and `r` is meant to be reused by other tasks, so it must not
  depend on the item being scored. Its query here is the trigger. The target reads the
  same LSTM states through its own attention (`a_tg`), which enters only the CTR head.
  So `user_representation` (the `user_representation` signature) is one vector per
  request: the target features of the examples are ignored.
- the intent head reads `r` only (a task tower on the shared representation, as in
  DUPN); the CTR loss and the intent loss both train `r`, the LSTM and the tables.
- behaviour type and time get tables of their own inside the model (`behavior_table`
  of `vocab_sizes["behavior"]` rows, `time_table` of `features.TIME_BUCKETS` rows): the
  shared tables of `layers.embedding.make_tables` (DIN's and DAIAN's) are unchanged.
- the LSTM runs without cuDNN (`use_cudnn=False`): cuDNN's masked kernel needs every
  row to have at least one valid step, and rows without history exist.

Inputs: `emb.feature_input_keys(user_columns)` plus `hist_behavior_xf` and
`hist_time_bucket_xf`.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence

import keras
from keras import ops

from daian_tf.core import features as F
from daian_tf.core.names import CTR_OUTPUT, DUPN as DUPN_NAME
from daian_tf.layers import embedding as emb
from daian_tf.layers.attention import DinAttentionPooling
from daian_tf.layers.sequence import last_valid_step

BEHAVIOR_VOCAB = emb.vocab_of(F.HIST_BEHAVIOR)  # the Transform vocabulary of `hist_behavior`
BEHAVIOR_XF, TIME_BUCKET_XF = F.xf(F.HIST_BEHAVIOR), F.xf(F.HIST_TIME_BUCKET)


def dupn_input_keys(user_columns: Sequence[str]) -> List[str]:
    """The transformed features DUPN reads: DIN's, the behaviour ids and time buckets."""
    return emb.feature_input_keys(user_columns) + [BEHAVIOR_XF, TIME_BUCKET_XF]


@keras.saving.register_keras_serializable(package="daian")
class DUPN(keras.Model):
    """The DUPN-style CTR model with an intent task (see the module docstring).

    Args:
        model_cfg: `ModelConfig` (embedding_dim, embedding_l2, hidden_units,
            attention_units, attention_softmax, dropout, lstm_units,
            user_representation_dim, intent_hidden_units, intent_loss_weight).
        vocab_sizes: table rows per vocabulary name (`transform.vocab_sizes`); needs
            "behavior".
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
        kwargs.setdefault("name", DUPN_NAME)
        super().__init__(**kwargs)
        if int(num_levels) < 2:
            raise ValueError(f"DUPN: num_levels must be >= 2, got {num_levels}")
        if BEHAVIOR_VOCAB not in vocab_sizes:
            raise ValueError(f"DUPN: vocab_sizes lacks {BEHAVIOR_VOCAB!r}; got "
                             f"{sorted(vocab_sizes)}")
        c = model_cfg
        self.cfg = c
        self.user_columns = tuple(user_columns)
        self.num_levels = int(num_levels)
        self.intent_loss_weight = float(c.intent_loss_weight)

        self.embedding = emb.FeatureEmbedding(vocab_sizes, self.user_columns,
                                              c.embedding_dim, c.embedding_l2,
                                              name="embedding")
        self.behavior_table = keras.layers.Embedding(int(vocab_sizes[BEHAVIOR_VOCAB]),
                                                     c.embedding_dim,
                                                     name="behavior_table")
        self.time_table = keras.layers.Embedding(F.TIME_BUCKETS, c.embedding_dim,
                                                 name="time_table")
        self.lstm = keras.layers.LSTM(c.lstm_units, return_sequences=True,
                                      use_cudnn=False, name="behavior_lstm")
        self.trigger_query = keras.layers.Dense(c.lstm_units, name="trigger_query")
        self.target_query = keras.layers.Dense(c.lstm_units, name="target_query")
        self.trigger_attention = DinAttentionPooling(hidden_units=c.attention_units,
                                                     use_softmax=c.attention_softmax,
                                                     name="trigger_attention")
        self.target_attention = DinAttentionPooling(hidden_units=c.attention_units,
                                                    use_softmax=c.attention_softmax,
                                                    name="target_attention")
        self.representation = keras.layers.Dense(c.user_representation_dim,
                                                 activation="relu",
                                                 name="user_representation")
        self.intent_hidden = [keras.layers.Dense(u, activation="relu",
                                                 name=f"intent_hidden_{i}")
                              for i, u in enumerate(c.intent_hidden_units)]
        self.intent_logits = keras.layers.Dense(self.num_levels, name="intent_logits")
        self.head = [keras.layers.Dense(u, activation="relu", name=f"head_{i}")
                     for i, u in enumerate(c.hidden_units)]
        self.head_dropout = (keras.layers.Dropout(c.dropout, name="head_dropout")
                             if c.dropout > 0 else None)
        self.output_layer = keras.layers.Dense(1, activation="sigmoid", name=CTR_OUTPUT)

    @property
    def input_keys(self) -> List[str]:
        """The transformed features the model reads at serving time."""
        return dupn_input_keys(self.user_columns)

    # --- shared bottom ----------------------------------------------------------
    def states(self, inputs: Mapping, e=None, training=None):
        """The LSTM states `H` `(B, T, lstm_units)` over the steps `x_j` and the mask."""
        if e is None:
            e = self.embedding(inputs)
        steps = ops.concatenate([e[emb.HISTORY],
                                 self.behavior_table(inputs[BEHAVIOR_XF]),
                                 self.time_table(inputs[TIME_BUCKET_XF])], axis=-1)
        mask = e[emb.MASK]
        return self.lstm(steps, mask=mask, training=training), mask

    def _representation(self, inputs, e, training=None):
        states, mask = self.states(inputs, e, training=training)
        attended = self.trigger_attention(self.trigger_query(e[emb.TRIGGER_QUERY]),
                                          states, mask=mask)
        r = self.representation(ops.concatenate(
            [attended, e[emb.USER], last_valid_step(states, mask)], axis=-1))
        return r, states, mask

    def user_representation(self, inputs: Mapping, training=None):
        """The shared user representation `r` `(B, user_representation_dim)`: reads the
        user, the trigger and the history only (one vector per request)."""
        e = self.embedding(inputs)
        return self._representation(inputs, e, training=training)[0]

    def _intent(self, r):
        h = r
        for layer in self.intent_hidden:
            h = layer(h)
        return ops.softmax(self.intent_logits(h), axis=-1)

    def predict_intent(self, inputs: Mapping, training=None):
        """p̂ `(B, n)`: the intent task's distribution (rows sum to 1)."""
        return self._intent(self.user_representation(inputs, training=training))

    # --- forward ------------------------------------------------------------------
    def call(self, inputs, training=None):
        return self.ctr_and_intent(inputs, training=training)[0]

    def ctr_and_intent(self, inputs: Mapping, training=None):
        """`(ŷ (B, 1), p̂ (B, n))` from one pass of the shared bottom (the multi-task
        fit's forward; the call builds the intent task with the model)."""
        e = self.embedding(inputs)
        r, states, mask = self._representation(inputs, e, training=training)
        intent = self._intent(r)
        attended = self.target_attention(self.target_query(e[emb.TARGET_QUERY]),
                                         states, mask=mask)
        x = ops.concatenate([r, e[emb.TRIGGER], e[emb.TARGET], attended], axis=-1)
        for layer in self.head:
            x = layer(x)
            if self.head_dropout is not None:
                x = self.head_dropout(x, training=training)
        return self.output_layer(x), intent


def build_dupn(cfg, vocab_sizes: Mapping[str, int]) -> DUPN:
    """DUPN from the full `Config`: n is `samples.num_intent_levels`."""
    return DUPN(cfg.model, vocab_sizes, tuple(cfg.samples.user_columns),
                cfg.samples.num_intent_levels)
