"""DEI2N, the Deep Evolutional Instant Interest Network (Xiao et al., 2024), as we read it,
over DIN's shared embeddings (`docs/models-trigger-aware.md` §DEI2N).

    m_rec  = the `model.recent_steps` most recent real steps of E_u (RecentStepsMask)
    o_inst = MHA(query = q_tr, keys = values = E_u, mask = m_rec)·1[any m_rec]
                                                   instant interest: trigger × recent steps
    o_din  = DIN pooling of E_u with the target query q_tg                  DIN's interest
    t      = [e_tr ⊙ e_tg ‖ e_tr − e_tg]            trigger–target interaction (TTIL)
    ŷ      = σ(MLP([e_u ‖ e_tr ‖ e_tg ‖ o_din ‖ o_inst ‖ t]))

- Instant interest: Keras `MultiHeadAttention` (`model.attention_heads` heads,
  `attention_width / attention_heads` dims each; output the width of a history step)
  with the trigger as the one query over the last k real steps; a row with no real step
  gets a zero vector (a fully masked softmax would otherwise average padded steps).
- The paper's "evolution" of the instant interest follows the user down the result list
  (scroll depth / position) and over time. This project never feeds the position to a
  model (`features.POSITION` is analysis-only) and has no per-step timestamps among the
  model inputs, so that part is absent: what remains is the recency window m_rec.
- Padded steps (id `features.PADDING_ID`) are outside m_rec and the DIN mask, so they get
  attention weight exactly 0.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from daian_tf.core.names import CTR_OUTPUT, DEI2N
from daian_tf.layers import embedding as emb
from daian_tf.layers.sequence import RecentStepsMask
from daian_tf.models.functional_parts import embedded_inputs, history_pooling, mlp

INSTANT_LAYER = "dei2n_instant_attention"  # the MultiHeadAttention of o_inst


def build_dei2n(model_cfg, vocab_sizes: Mapping[str, int],
                user_columns: Sequence[str]) -> keras.Model:
    """DEI2N as a functional Keras 3 model.

    Args:
        model_cfg: `ModelConfig` (embedding_dim, embedding_l2, hidden_units,
            attention_units, attention_softmax, attention_heads, attention_width,
            recent_steps, dropout).
        vocab_sizes: table rows per vocabulary name (`data.transform.vocab_sizes`).
        user_columns: the user profile columns.

    Returns:
        A model over DIN's inputs returning the click probability `(B, 1)` named
        `names.CTR_OUTPUT`.
    """
    inputs, e = embedded_inputs(model_cfg, vocab_sizes, user_columns)

    recent = RecentStepsMask(model_cfg.recent_steps, name="dei2n_recent_steps")(
        e[emb.MASK])
    attended = keras.layers.MultiHeadAttention(
        num_heads=model_cfg.attention_heads,
        key_dim=model_cfg.attention_width // model_cfg.attention_heads,
        name=INSTANT_LAYER)(
        ops.expand_dims(e[emb.TRIGGER_QUERY], 1), e[emb.HISTORY],
        attention_mask=ops.expand_dims(recent, 1))  # (B, 1, 3D)
    any_recent = ops.cast(ops.any(recent, axis=1, keepdims=True), attended.dtype)
    o_inst = ops.squeeze(attended, axis=1) * any_recent

    o_din = history_pooling(model_cfg, "din_attention", e[emb.TARGET_QUERY], e)
    interaction = [e[emb.TRIGGER] * e[emb.TARGET], e[emb.TRIGGER] - e[emb.TARGET]]
    x = ops.concatenate([e[emb.USER], e[emb.TRIGGER], e[emb.TARGET], o_din, o_inst]
                        + interaction, axis=-1)
    output = mlp(x, model_cfg.hidden_units, model_cfg.dropout, "head",
                 output_name=CTR_OUTPUT)
    return keras.Model(inputs=list(inputs.values()), outputs=output, name=DEI2N)
