"""DIHN, the Deep Interest Highlight Network (Shen et al., SIGIR 2022), as we read it,
over DIN's shared embeddings (`docs/models-trigger-aware.md` §DIHN).

    o_tr  = DIN pooling of E_u with the trigger query q_tr            HIEM, the highlight
    α     = σ(MLP_uin([e_u ‖ e_tr ‖ o_tr])) ∈ (0, 1)                  UIN
    e_fus = α·e_tr + (1 − α)·e_tg                                     FEM
    o_tg  = DIN pooling of E_u with the target query q_tg            HIEM, DIN's interest
    o_hl  = α·o_tr                                                    HIEM, highlighted
    ŷ     = σ(MLP([e_u ‖ e_tr ‖ e_tg ‖ e_fus ‖ o_tg ‖ o_hl]))

- UIN (User Intent Network): α is "how much the user wants items related to the
  trigger", a property of the request (it never reads the target). Its history input is
  the trigger-query pooling `o_tr` (the pooled history the highlight uses as well), so it
  is the same function of user, trigger and history as DAIAN's UIM input (DAIAN.md [I-4]).
  The paper supervises α with a label of its own; here α is learnt end to end from the
  CTR loss alone (the sample's per-request intent label could serve, see the doc).
- FEM (Fusion Embedding Module): the trigger and target item vectors (`[id ‖ category ‖
  brand ‖ shop ‖ price]`, 5D) mixed by α.
- HIEM (Hybrid Interest Extracting Module): two DIN attention poolings (DIN's activation
  unit, `model.attention_units`, `model.attention_softmax`), the target one and the
  trigger one; the trigger one is scaled by α so that it speaks in proportion to the
  trigger intent.
- Padded history steps (id `features.PADDING_ID`) get weight 0 in both poolings.

`α` is the output of the layer `INTENT_LAYER` (`intent_model(model)` gives it as a model).
It is a scalar, not a distribution over levels, so the model has no `intent` signature.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from daian_tf.core.names import CTR_OUTPUT, DIHN
from daian_tf.layers import embedding as emb
from daian_tf.models.functional_parts import embedded_inputs, history_pooling, mlp

INTENT_LAYER = "dihn_intent_score"  # α, (B, 1)


def build_dihn(model_cfg, vocab_sizes: Mapping[str, int],
               user_columns: Sequence[str]) -> keras.Model:
    """DIHN as a functional Keras 3 model.

    Args:
        model_cfg: `ModelConfig` (embedding_dim, embedding_l2, hidden_units,
            attention_units, attention_softmax, uim_hidden_units for UIN, dropout).
        vocab_sizes: table rows per vocabulary name (`data.transform.vocab_sizes`).
        user_columns: the user profile columns.

    Returns:
        A model over DIN's inputs (`layers.embedding.feature_input_keys`) returning the
        click probability `(B, 1)` named `names.CTR_OUTPUT`.
    """
    inputs, e = embedded_inputs(model_cfg, vocab_sizes, user_columns)

    o_tr = history_pooling(model_cfg, "dihn_trigger_attention",
                           e[emb.TRIGGER_QUERY], e)
    o_tg = history_pooling(model_cfg, "dihn_target_attention",
                           e[emb.TARGET_QUERY], e)
    # UIN: a request-side score in (0, 1)
    uin = mlp(ops.concatenate([e[emb.USER], e[emb.TRIGGER], o_tr], axis=-1),
              model_cfg.uim_hidden_units, 0.0, "dihn_uin")
    alpha = keras.layers.Dense(1, activation="sigmoid", name=INTENT_LAYER)(uin)
    # FEM
    fused = alpha * e[emb.TRIGGER] + (1.0 - alpha) * e[emb.TARGET]
    # HIEM: the trigger's interest, highlighted by α
    highlighted = alpha * o_tr
    x = ops.concatenate([e[emb.USER], e[emb.TRIGGER], e[emb.TARGET], fused, o_tg,
                         highlighted], axis=-1)
    output = mlp(x, model_cfg.hidden_units, model_cfg.dropout, "head",
                 output_name=CTR_OUTPUT)
    return keras.Model(inputs=list(inputs.values()), outputs=output, name=DIHN)


def intent_model(model: keras.Model) -> keras.Model:
    """The sub-model from `model`'s inputs to DIHN's α `(B, 1)`."""
    return keras.Model(model.inputs, model.get_layer(INTENT_LAYER).output)
