"""DIAN, the Deep Intention-Aware Network (Xia et al., 2023), as we read it, over DIN's
shared embeddings (`docs/models-trigger-aware.md` §DIAN).

    o_tr  = DIN pooling of E_u with the trigger query q_tr
    o_tg  = DIN pooling of E_u with the target query q_tg
    p     = σ(MLP_int([e_u ‖ e_tr ‖ o_tr]))        P(the intent is trigger-related)
    ŷ_TAN = σ(MLP_TAN([e_u ‖ e_tr ‖ e_tg ‖ o_tr ‖ o_tg ‖ e_tr ⊙ e_tg]))   trigger-aware
    ŷ_TFN = σ(MLP_TFN([e_u ‖ e_tg ‖ o_tg]))         trigger-free: DIN without the trigger
    ŷ     = p·ŷ_TAN + (1 − p)·ŷ_TFN                 total probability over the intent

- The intent network reads only the request (user, trigger, history), never the target.
- TAN and TFN are separate towers (`model.hidden_units` each) over the shared tables and
  share the target-query pooling `o_tg` (a feature extractor, not a tower); TFN never
  sees the trigger (nor `o_tr`), so it is the trigger-free recommender the paper pairs
  with the trigger-aware one.
- ŷ is a convex combination of two sigmoids, so it lies in (0, 1).
- The paper trains p without a label of its own, through the mixture (that is what the
  conditional-probability decomposition allows); so do we.
- Padded history steps get weight 0 in both poolings.

The named layers `INTENT_LAYER`, `TAN_LAYER`, `TFN_LAYER` output p, ŷ_TAN and ŷ_TFN
(`parts_model(model)` returns all three with ŷ).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from daian_tf.core.names import CTR_OUTPUT, DIAN
from daian_tf.layers import embedding as emb
from daian_tf.layers.trigger_aware import ConditionalMixture
from daian_tf.models.functional_parts import embedded_inputs, history_pooling, mlp

INTENT_LAYER = "dian_intent_probability"  # p, (B, 1)
TAN_LAYER = "dian_tan_probability"  # ŷ_TAN, (B, 1)
TFN_LAYER = "dian_tfn_probability"  # ŷ_TFN, (B, 1)


def build_dian(model_cfg, vocab_sizes: Mapping[str, int],
               user_columns: Sequence[str]) -> keras.Model:
    """DIAN as a functional Keras 3 model.

    Args:
        model_cfg: `ModelConfig` (embedding_dim, embedding_l2, hidden_units for TAN and
            TFN, attention_units, attention_softmax, uim_hidden_units for the intent
            network, dropout).
        vocab_sizes: table rows per vocabulary name (`data.transform.vocab_sizes`).
        user_columns: the user profile columns.

    Returns:
        A model over DIN's inputs returning ŷ `(B, 1)` named `names.CTR_OUTPUT`.
    """
    inputs, e = embedded_inputs(model_cfg, vocab_sizes, user_columns)

    o_tr = history_pooling(model_cfg, "dian_trigger_attention",
                           e[emb.TRIGGER_QUERY], e)
    o_tg = history_pooling(model_cfg, "dian_target_attention",
                           e[emb.TARGET_QUERY], e)
    p = mlp(ops.concatenate([e[emb.USER], e[emb.TRIGGER], o_tr], axis=-1),
            model_cfg.uim_hidden_units, 0.0, "dian_intent", output_name=INTENT_LAYER)
    tan = mlp(ops.concatenate([e[emb.USER], e[emb.TRIGGER], e[emb.TARGET], o_tr, o_tg,
                               e[emb.TRIGGER] * e[emb.TARGET]], axis=-1),
              model_cfg.hidden_units, model_cfg.dropout, "dian_tan",
              output_name=TAN_LAYER)
    tfn = mlp(ops.concatenate([e[emb.USER], e[emb.TARGET], o_tg], axis=-1),
              model_cfg.hidden_units, model_cfg.dropout, "dian_tfn",
              output_name=TFN_LAYER)
    output = ConditionalMixture(name=CTR_OUTPUT)(p, tan, tfn)
    return keras.Model(inputs=list(inputs.values()), outputs=output, name=DIAN)


def parts_model(model: keras.Model) -> keras.Model:
    """The sub-model from `model`'s inputs to `[p, ŷ_TAN, ŷ_TFN, ŷ]`, each `(B, 1)`."""
    return keras.Model(model.inputs,
                       [model.get_layer(n).output
                        for n in (INTENT_LAYER, TAN_LAYER, TFN_LAYER, CTR_OUTPUT)])
