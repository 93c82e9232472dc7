"""DAIAN, assembled from the blocks of `daian_tf.layers` (DAIAN.md §1–§7).

    p̂      = UIM(e_u, E_u, e_tr)                                  Eq. 4–5 (own tables, I-10)
    v_int  = p̂ · T_level                                           I-5
    o_din  = DIN pooling of E_u with the target as query           §2
    o_imp  = I2E(e_tr, v_int, E_u)                                 Eq. 6–8
    o_exp  = MHTA(e_tg, MHSA(S_u)), S_u = {j : sim(j, tr) ≥ τ}     Eq. 9–10, I-7
    e_sim, s_sem = hybrid similarity enhancer(tr, tg)              Eq. 11–14
    o'_exp, o'_imp = IA2N(e_sim, sg(v_int), o_exp, o_imp)          Eq. 15–18
    ŷ = σ(MLP([e_u ‖ e_tr ‖ e_tg ‖ o_din ‖ o'_exp ‖ o'_imp ‖ e_sim ‖ s_sem]))   §6

The multimodal vectors come from a frozen catalog table inside the model, keyed by the raw
item id (`layers.catalog.MultimodalCatalog`), so serving requests carry only ids and an item
outside the training vocabulary still has its vector.

UIM, I2E and the explicit block's self-attention read only the request (user, trigger,
history); `call` computes them once per distinct request of its batch and gathers the
results back to the samples (`request_side`, `per_sample_request`,
`layers.request_rows`; `model.request_dedup`), the same function and gradients.
`score_candidates` (the `rank` signature) scores N candidates of one request: the
request side and the history's embeddings on the one row, and DIN's pooling and the
explicit read-out against the one history, not N copies of it.

Switches (`ModelConfig`): `use_uim=False` is "w/o UIM" (the intent vector is not a
distribution: UIM's raw scores times the level table), `use_die=False` drops o_imp/o_exp
and IA2N, and with them v_int and its level table, since the intent reaches the click
probability only through I2E and IA2N (the prediction layer reads no v_int); UIM is then
trained on its KL loss alone and served as p̂. `use_sein=False` drops e_sim/s_sem and IA2N (o_exp/o_imp enter the head
unweighted); `uim_shared_tables` shares the CTR network's tables with UIM (I-10).

The model's inputs are fixed (`input_keys`) and its intent is always UIM's p̂. Stage 2
of the training (Eq. 20) feeds the ground-truth intent instead through
`per_sample_request(..., intent_keys=...)` (`label_intent`), from a model of its own
(`training.stages.LabelIntentModel`), so nothing about this model changes between stages.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import keras
import numpy as np
from keras import ops

from daian_tf.core import features as F
from daian_tf.core.names import CTR_OUTPUT, DAIAN as DAIAN_NAME
from daian_tf.core.similarity_range import check_range, lower_edge_of_top
from daian_tf.layers import embedding as emb
from daian_tf.layers.adaptive import IntentAwareAdaptiveNetwork
from daian_tf.layers.attention import DinAttentionPooling
from daian_tf.layers.catalog import MultimodalCatalog, cosine
from daian_tf.layers.explicit_intent import (ExplicitIntentExploitation,
                                             subsequence_mask)
from daian_tf.layers.implicit_intent import ImplicitIntentExploration
from daian_tf.layers.request_rows import once_per_request
from daian_tf.layers.similarity import HybridSimilarityEnhancer
from daian_tf.layers.user_intent import IntentEmbedding, IntentEstimator


# keys of the request-side dict (`DAIAN.request_side`: once per distinct request)
_REQ_INTENT, _REQ_VINT, _REQ_IMP = "intent", "v_int", "o_imp"
_REQ_EXP, _REQ_EXP_MASK = "explicit_attended", "explicit_mask"


def daian_input_keys(user_columns: Sequence[str]) -> List[str]:
    """The transformed features DAIAN reads at serving time."""
    return emb.feature_input_keys(user_columns) + [F.raw(k) for k in F.CATALOG_KEYS]


# the inputs of `daian_input_keys` that belong to the candidate (the target)
CANDIDATE_KEYS = emb.CANDIDATE_KEYS | {F.raw(F.TARGET_ITEM_ID)}


def daian_request_keys(user_columns: Sequence[str]) -> List[str]:
    """The inputs of `daian_input_keys` that belong to the request (user, trigger,
    history), not to the candidate."""
    return [k for k in daian_input_keys(user_columns) if k not in CANDIDATE_KEYS]


def label_intent(label, mask, num_levels: int):
    """The ground-truth intent of Eq. 20: `label` `(B, n)` where `mask` `(B,)` is
    positive, the uniform distribution elsewhere (samples of requests without a
    click)."""
    label = ops.cast(label, "float32")
    has_label = ops.expand_dims(ops.cast(mask, "float32"), -1) > 0
    return ops.where(has_label, label, ops.ones_like(label) / num_levels)


def estimate_intent(embedding: emb.FeatureEmbedding, estimator: IntentEstimator,
                    inputs: Mapping, training=None):
    """UIM (Eq. 4–5, I-4): the trigger's `[id ‖ category ‖ brand]` queries the history."""
    u = embedding(inputs)
    return estimator(u[emb.USER], u[emb.HISTORY], u[emb.TRIGGER_QUERY], mask=u[emb.MASK],
                     training=training)


@keras.saving.register_keras_serializable(package="daian")
class DAIAN(keras.Model):
    """The DAIAN CTR model (see the module docstring).

    Args:
        model_cfg: `ModelConfig`.
        vocab_sizes: table rows per vocabulary name (`transform.vocab_sizes`).
        user_columns: the user profile columns.
        num_levels: n, the number of intent levels (`samples.num_intent_levels`).
        sim_range: `[lo, hi]` of the similarity levels and bins (I-2).
        catalog_ids: the catalog's raw item ids `(N,)`.
        catalog_vectors: their multimodal vectors `(N, d_m)`.

    Call arguments:
        inputs: dict of transformed features: `daian_input_keys(user_columns)` (other
            keys are ignored).
        training: Keras' flag.
        request: `per_sample_request`'s dict, when the caller computed it.

    Returns:
        `(B, 1)` click probabilities.
    """

    def __init__(self, model_cfg, vocab_sizes: Mapping[str, int],
                 user_columns: Sequence[str], num_levels: int,
                 sim_range: Sequence[float], catalog_ids: Sequence[str],
                 catalog_vectors: np.ndarray, **kwargs):
        kwargs.setdefault("name", DAIAN_NAME)
        super().__init__(**kwargs)
        lo, hi = check_range(sim_range)
        self.cfg = model_cfg
        self.user_columns = tuple(user_columns)
        self.num_levels = int(num_levels)
        self.sim_range = (lo, hi)
        self.threshold = lower_edge_of_top(lo, hi, self.num_levels,
                                           model_cfg.explicit_top_levels)
        c = model_cfg

        self.embedding = emb.FeatureEmbedding(vocab_sizes, self.user_columns,
                                              c.embedding_dim, c.embedding_l2,
                                              name="ctr_embedding")
        self.uim_embedding = (self.embedding if c.uim_shared_tables else
                              emb.FeatureEmbedding(vocab_sizes, self.user_columns,
                                                   c.embedding_dim, c.embedding_l2,
                                                   table_prefix="uim_",
                                                   request_only=True,
                                                   name="uim_embedding"))
        self.uim = IntentEstimator(self.num_levels, hidden_units=c.uim_hidden_units,
                                   attention_units=c.attention_units,
                                   as_distribution=c.use_uim, name="uim")
        # v_int feeds I2E and IA2N only, both parts of DIE
        self.intent_embedding = (IntentEmbedding(self.num_levels, c.intent_dim,
                                                 name="intent_level_table")
                                 if c.use_die else None)
        self.catalog = MultimodalCatalog(list(catalog_ids), catalog_vectors,
                                         name="multimodal_catalog")
        self.din_pooling = DinAttentionPooling(hidden_units=c.attention_units,
                                               use_softmax=c.attention_softmax,
                                               name="din_attention")
        if c.use_die:
            self.implicit = ImplicitIntentExploration(
                num_heads=c.attention_heads, attention_width=c.attention_width,
                dropout=c.dropout, name="implicit_intent")
            self.explicit = ExplicitIntentExploitation(
                num_heads=c.attention_heads, attention_width=c.attention_width,
                dropout=c.dropout, max_steps=c.explicit_max_steps,
                name="explicit_intent")
        if c.use_sein:
            self.similarity = HybridSimilarityEnhancer(
                num_bins=c.num_sim_bins, sim_range=self.sim_range,
                projection_units=c.projection_units, align_weight=c.align_weight,
                name="similarity_enhancer")
        if c.use_sein and c.use_die:
            self.adaptive = IntentAwareAdaptiveNetwork(
                hidden_units=c.gate_hidden_units, gamma=c.gate_gamma, name="ia2n")
        self.head = [keras.layers.Dense(u, activation="relu", name=f"head_{i}")
                     for i, u in enumerate(c.hidden_units)]
        self.head_dropout = (keras.layers.Dropout(c.dropout, name="head_dropout")
                             if c.dropout > 0 else None)
        self.output_layer = keras.layers.Dense(1, activation="sigmoid",
                                               name=CTR_OUTPUT)

    # --- interface ----------------------------------------------------------------
    @property
    def input_keys(self) -> List[str]:
        """The transformed features the model reads at serving time."""
        return daian_input_keys(self.user_columns)

    @property
    def request_keys(self) -> List[str]:
        """The inputs the request side reads: rows equal on them are one request."""
        return daian_request_keys(self.user_columns)

    def uim_variables(self) -> list:
        """UIM's trainable variables: its estimator and, unless shared, its tables."""
        layers = [self.uim]
        if self.uim_embedding is not self.embedding:
            layers.append(self.uim_embedding)
        return [v for layer in layers for v in layer.trainable_variables]

    def predict_intent(self, inputs: Mapping, training=None):
        """UIM's intent distribution p̂ `(B, n)` (Eq. 5); raw scores with `use_uim=False`."""
        return estimate_intent(self.uim_embedding, self.uim, inputs, training=training)

    # --- forward ------------------------------------------------------------------
    def request_side(self, inputs: Mapping, training=None, intent=None,
                     embedded: Optional[Mapping] = None) -> Dict:
        """The blocks that read the request only (user, trigger, history), for each
        row of `inputs`: the intent (UIM's p̂, unless `intent` `(B, n)` is given),
        v_int, o_imp (I2E) and the explicit block's self-attention over the
        subsequence. `call` runs this on the distinct requests of its batch
        (`request_rows.distinct_rows`), the `rank` signature on its one context.
        `embedded`: `self.embedding.request(inputs)`, when the caller has it."""
        if intent is None:
            intent = self.predict_intent(inputs, training=training)
        out = {_REQ_INTENT: intent}
        if self.cfg.use_die:
            v_int = out[_REQ_VINT] = self.intent_embedding(intent)
            e = self.embedding.request(inputs) if embedded is None else embedded
            out[_REQ_IMP] = self.implicit(e[emb.TRIGGER], v_int, e[emb.HISTORY],
                                          mask=e[emb.MASK], training=training)
            m_tr = self.catalog(inputs[F.raw(F.TRIGGER_ITEM_ID)])
            m_hist = self.catalog(inputs[F.raw(F.HIST_ITEM_ID)])
            sim_hist = cosine(m_hist, ops.expand_dims(m_tr, 1))  # (B, T)
            sub = subsequence_mask(sim_hist, e[emb.MASK], self.threshold)
            if not self.explicit.built:  # `attend` is not a call: build it here
                self.explicit.build(e[emb.TRIGGER].shape, e[emb.HISTORY].shape)
            out[_REQ_EXP], out[_REQ_EXP_MASK] = self.explicit.attend(
                e[emb.HISTORY], sub, training=training)
        return out

    def per_sample_request(self, inputs: Mapping, training=None,
                           intent_keys: Optional[Sequence[str]] = None) -> Dict:
        """`request_side` of each row of `inputs`, computed once per distinct request
        of the batch and gathered back (`model.request_dedup`; off: on every row).

        `intent_keys` = (label, mask) input keys: the ground-truth intent of those
        inputs (`label_intent`) in place of p̂ (stage 2, Eq. 20). They then also tell
        requests apart: a leave-one-out label differs between a request's samples.
        """
        def side(x):
            intent = (None if intent_keys is None else
                      label_intent(x[intent_keys[0]], x[intent_keys[1]], self.num_levels))
            return self.request_side(x, training=training, intent=intent)

        if not self.cfg.request_dedup:
            return side(inputs)
        return once_per_request(side, inputs,
                                self.request_keys + list(intent_keys or ()))

    def call_with_intent(self, inputs: Mapping, training=None):
        """`(call(inputs), p̂)`: the click probabilities `(B, 1)` and UIM's intent of
        each row `(B, n)`, from one computation of the request side."""
        request = self.per_sample_request(inputs, training=training)
        return self(inputs, training=training, request=request), request[_REQ_INTENT]

    def call(self, inputs, training=None, request: Optional[Dict] = None):
        """Click probabilities `(B, 1)`; `request` (from `request_side`, one row per
        sample) skips recomputing the request side."""
        e = self.embedding(inputs)
        if request is None:
            request = self.per_sample_request(inputs, training=training)
        pooled = self.din_pooling(e[emb.TARGET_QUERY], e[emb.HISTORY], mask=e[emb.MASK])
        o_exp = None
        if self.cfg.use_die:
            o_exp = self.explicit.read_out(e[emb.TARGET], request[_REQ_EXP],
                                           request[_REQ_EXP_MASK], training=training)
        m_tr = m_tg = None
        if self.cfg.use_sein:
            m_tr = self.catalog(inputs[F.raw(F.TRIGGER_ITEM_ID)])
            m_tg = self.catalog(inputs[F.raw(F.TARGET_ITEM_ID)])
        return self._click_probability(e, pooled, o_exp, request, m_tr, m_tg,
                                       training=training)

    def score_candidates(self, context: Mapping, candidates: Mapping):
        """Click probabilities `(N, 1)` of N candidates for ONE request, the same as
        `call` on N rows that repeat the request (inference only).

        Args:
            context: the request's inputs, one row (`request_keys`; other keys are
                ignored).
            candidates: the candidates' target inputs (`CANDIDATE_KEYS`), N rows.

        The request side, the user's, trigger's and history's embeddings run on the
        one row; DIN's pooling and the explicit read-out score the N candidates
        against the one history (`DinAttentionPooling.pool_shared`, shared keys in
        `target_attention`) instead of against N copies of it.
        """
        e_ctx = self.embedding.request(context)
        request = self.request_side(context, training=False, embedded=e_ctx)
        e_cand = self.embedding.candidates(candidates)
        n = ops.shape(e_cand[emb.TARGET])[0]

        def rows(x):  # the request's row, for each candidate
            return ops.broadcast_to(x, (n,) + tuple(x.shape[1:]))

        pooled = self.din_pooling.pool_shared(e_cand[emb.TARGET_QUERY],
                                              e_ctx[emb.HISTORY][0], e_ctx[emb.MASK][0])
        o_exp = None
        if self.cfg.use_die:
            o_exp = self.explicit.read_out(e_cand[emb.TARGET], request[_REQ_EXP][0],
                                           request[_REQ_EXP_MASK][0], training=False)
        m_tr = m_tg = None
        if self.cfg.use_sein:
            m_tr = rows(self.catalog(context[F.raw(F.TRIGGER_ITEM_ID)]))
            m_tg = self.catalog(candidates[F.raw(F.TARGET_ITEM_ID)])
        e = {emb.USER: rows(e_ctx[emb.USER]), emb.TRIGGER: rows(e_ctx[emb.TRIGGER]),
             emb.TRIGGER_ID: rows(e_ctx[emb.TRIGGER_ID]), **e_cand}
        per_row = {k: rows(request[k]) for k in (_REQ_VINT, _REQ_IMP) if k in request}
        return self._click_probability(e, pooled, o_exp, per_row, m_tr, m_tg,
                                       training=False)

    def _click_probability(self, e: Mapping, pooled, o_exp, request: Mapping, m_tr,
                           m_tg, training=None):
        """The blocks after the attentions (SEIN, IA2N, the head), one row a sample:
        `e` the embeddings, `pooled` DIN's pooling, `o_exp` the explicit read-out,
        `request` v_int and o_imp, `m_tr`/`m_tg` the multimodal vectors."""
        parts = [e[emb.USER], e[emb.TRIGGER], e[emb.TARGET], pooled]
        if self.cfg.use_die:
            o_imp = request[_REQ_IMP]
        if self.cfg.use_sein:
            e_sim, s_sem = self.similarity(e[emb.TRIGGER_ID], e[emb.TARGET_ID], m_tr, m_tg,
                                           training=training)
            if self.cfg.use_die:
                o_exp, o_imp = self.adaptive(e_sim, request[_REQ_VINT], o_exp, o_imp,
                                             training=training)
        if self.cfg.use_die:
            parts += [o_exp, o_imp]
        if self.cfg.use_sein:
            parts += [e_sim, s_sem]
        x = ops.concatenate(parts, axis=-1)
        for layer in self.head:
            x = layer(x)
            if self.head_dropout is not None:
                x = self.head_dropout(x, training=training)
        return self.output_layer(x)


def build_daian(cfg, vocab_sizes: Mapping[str, int], sim_range: Sequence[float],
                catalog_ids: Sequence[str], catalog_vectors: np.ndarray) -> DAIAN:
    """DAIAN from the full `Config` (its model and samples sections)."""
    return DAIAN(cfg.model, vocab_sizes, tuple(cfg.samples.user_columns),
                 cfg.samples.num_intent_levels, sim_range, catalog_ids, catalog_vectors)
