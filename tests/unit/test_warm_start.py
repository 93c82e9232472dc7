"""Warm start across days (`training.warm_start`): tables remapped by token between two
days' vocabularies, everything else copied, mismatches refused. No Beam/TFX: a stand-in
for `tft.TFTransformOutput` serves the vocabularies."""

from __future__ import annotations

import dataclasses
import json
import zlib

import keras
import numpy as np
import pytest

from daian_tf.core import features as F
from daian_tf.core.config import ModelConfig
from daian_tf.core.errors import DaianInputError
from daian_tf.data.transform import vocab_sizes
from daian_tf.layers.embedding import table_vocabulary
from daian_tf.models import serving_input_keys
from daian_tf.models.daian import DAIAN, daian_input_keys
from daian_tf.models.din import build_din
from daian_tf.training import warm_start as WS

USER_COLUMNS = ("gender",)
B, T, D_M, LEVELS = 6, 5, 6, 4
SIM_RANGE = (-0.5, 0.9)
DIN_CFG = ModelConfig(embedding_dim=4, hidden_units=(16, 8), attention_units=(8,))
DAIAN_CFG = ModelConfig(name="daian", embedding_dim=4, hidden_units=(16, 8),
                        attention_units=(8,), uim_hidden_units=(8,), intent_dim=4,
                        attention_heads=2, attention_width=8, projection_units=(8,),
                        gate_hidden_units=(8,), num_sim_bins=5)


class FakeTransformOutput:
    """The part of `tft.TFTransformOutput` that `vocab_sizes` and the warm start read."""

    def __init__(self, vocabs):
        self.vocabs = {F.vocab_filename(k): [t.encode() for t in v]
                       for k, v in vocabs.items()}

    def vocabulary_by_name(self, vocab_filename):
        return list(self.vocabs[vocab_filename])

    def vocabulary_size_by_name(self, vocab_filename):
        return len(self.vocabs[vocab_filename])


def _day(prefixes_and_ranges):
    return {name: [f"{name[:2]}{k}" for k in ks] for name, ks in prefixes_and_ranges}


# Day A and day B: some tokens shared (in another order), some new, some dropped, other
# sizes; `user_gender` identical (a table whose remap is a plain copy).
DAY_A = _day([("item", range(0, 12)), ("category", [0, 1, 2, 3]),
              ("brand", [0, 1, 2, 3, 4]), ("shop", [0, 1, 2]), ("behavior", [0, 1]),
              (F.USER_ID_VOCAB, range(0, 8)), (F.user_profile_vocab("gender"), [0, 1])])
DAY_B = _day([("item", [11, 3, 20, 5, 0, 21, 7, 9, 22, 23, 24, 1, 2, 25]),
              ("category", [3, 9, 0, 1]), ("brand", [4, 2, 8]), ("shop", [2, 0, 5, 6]),
              ("behavior", [1, 0]), (F.USER_ID_VOCAB, [7, 6, 10, 0, 11, 3]),
              (F.user_profile_vocab("gender"), [0, 1])])
TFO_A, TFO_B = FakeTransformOutput(DAY_A), FakeTransformOutput(DAY_B)
SHARED = {name: sorted(set(DAY_A[name]) & set(DAY_B[name])) for name in DAY_A}


def _catalog(tokens):
    """Catalog vectors keyed by item token (the same token has the same vector)."""
    vectors = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=D_M)
               for t in tokens]
    return list(tokens), np.asarray(vectors, np.float32)


CATALOG_A = _catalog(DAY_A["item"] + ["cold"])
CATALOG_B = _catalog(DAY_B["item"] + ["cold", "cold2"])  # another size: skipped


def _din(tfo, seed, cfg=DIN_CFG):
    keras.utils.set_random_seed(seed)
    return build_din(cfg, vocab_sizes(tfo, USER_COLUMNS), USER_COLUMNS)


def _daian(tfo, seed, catalog, cfg=DAIAN_CFG, init_batch=True):
    keras.utils.set_random_seed(seed)
    model = DAIAN(cfg, vocab_sizes(tfo, USER_COLUMNS), USER_COLUMNS, LEVELS, SIM_RANGE,
                  *catalog)
    if init_batch:
        model(_inputs(DAY_A if tfo is TFO_A else DAY_B, seed=0), training=False)
    return model


def _vocab_of_key(xf_key):
    raw = xf_key[: -len(F.XF_SUFFIX)]
    if raw in F.PRICE_KEYS:
        return None
    if raw == F.USER_ID:
        return F.USER_ID_VOCAB
    if raw.startswith(F.USER_PREFIX):
        return F.user_profile_vocab(raw[len(F.USER_PREFIX):])
    return next(n for n, ks in F.SHARED_VOCABS.items() if raw in ks)


def _tokens(seed):
    """A batch as TOKENS drawn from the shared tokens, plus padding in the history and
    one out-of-vocabulary token ("zz") per id column."""
    rng = np.random.default_rng(seed)
    keys = daian_input_keys(USER_COLUMNS)
    hist = {F.xf(h) for _, h in F.DIN_PAIRS}
    lengths = np.array([T, 2, 0, 3, 1, T])
    out = {}
    for key in keys:
        if key.endswith(F.RAW_SUFFIX):
            continue
        vocab = _vocab_of_key(key)
        if vocab is None:  # price bucket: not a vocabulary
            out[key] = rng.integers(0, F.PRICE_BUCKETS, size=B)
            continue
        pool = SHARED[vocab] + ["zz"]
        shape = (B, T) if key in hist else (B,)
        tokens = rng.choice(np.array(pool, dtype=object), size=shape)
        if key in hist:
            tokens[np.arange(T)[None, :] >= lengths[:, None]] = ""
        out[key] = tokens
    return out


def _encode(tokens, day):
    """Transform's ids of `_tokens` on vocabulary `day`: i + 1, OOV V + 1, "" padding
    in the history; plus DAIAN's raw item ids."""
    x = {}
    for key, value in tokens.items():
        vocab = _vocab_of_key(key)
        if vocab is None:
            x[key] = value.astype(np.int64)
            continue
        index = {t: i + 1 for i, t in enumerate(day[vocab])}
        oov = len(day[vocab]) + 1
        x[key] = np.vectorize(lambda t: F.PADDING_ID if t == "" else index.get(t, oov),
                              otypes=[np.int64])(value)
    for key in F.CATALOG_KEYS:
        x[F.raw(key)] = np.vectorize(lambda t: t.encode(), otypes=[object])(
            tokens[F.xf(key)])
    return x


def _inputs(day, seed):
    return _encode(_tokens(seed), day)


def _distinctive(model):
    """Give every trainable variable distinctive values (not an initialiser's)."""
    rng = np.random.default_rng(123)
    for v in model.weights:
        if v.trainable:
            v.assign(rng.normal(0.0, 0.5, size=v.shape).astype("float32"))


def _scores(model, x):
    x = {k: x[k] for k in serving_input_keys(model)}
    return np.asarray(model(x, training=False)).reshape(-1)


def _tables(model):
    """{variable path: vocabulary} of the model's vocabulary tables."""
    return {v.path: v.vocabulary for v in WS.describe_variables(model)
            if v.kind == WS.KIND_VOCAB}


def _check_warm_started(old, fresh_values, new, report):
    """Brute force, variable by variable and token by token."""
    old_vars = WS.describe_variables(old)
    new_vars = WS.describe_variables(new)
    assert len(old_vars) == len(new_vars)
    tables, carried, fresh_rows, dropped = 0, 0, 0, 0
    for o, n, fresh in zip(old_vars, new_vars, fresh_values):
        ov, nv = np.asarray(o.variable.numpy()), np.asarray(n.variable.numpy())
        if n.kind == WS.KIND_CATALOG:
            np.testing.assert_array_equal(nv, fresh)  # today's catalog, untouched
            continue
        if n.kind == WS.KIND_COPY:
            np.testing.assert_array_equal(nv, ov, err_msg=n.path)
            continue
        tables += 1
        a, b = DAY_A[n.vocabulary], DAY_B[n.vocabulary]
        np.testing.assert_array_equal(nv[0], ov[0])  # padding
        np.testing.assert_array_equal(nv[len(b) + 1], ov[len(a) + 1])  # OOV
        for j, token in enumerate(b):
            if token in a:
                np.testing.assert_array_equal(nv[j + 1], ov[a.index(token) + 1],
                                              err_msg=f"{n.path} {token}")
                carried += 1
            else:
                np.testing.assert_array_equal(nv[j + 1], fresh[j + 1])
                fresh_rows += 1
        dropped += len(set(a) - set(b))
    assert (report.tables_remapped, report.rows_carried, report.new_rows,
            report.dropped_rows) == (tables, carried, fresh_rows, dropped)
    assert report.reserved_rows_carried == 2 * tables
    return tables


def test_tables_record_their_vocabulary():
    model = _din(TFO_A, 0)
    tables = _tables(model)
    assert tables == {f"embedding_{v}/embeddings": v
                      for v in ("item", "category", "brand", "shop", F.USER_ID_VOCAB,
                                F.user_profile_vocab("gender"))}
    price = model.get_layer(f"embedding_{F.PRICE_VOCAB}")
    assert table_vocabulary(price) is None  # fixed buckets: copied, not remapped


def test_din_warm_start_remaps_tables_by_token(tmp_path):
    old = _din(TFO_A, 0)
    _distinctive(old)
    WS.save_warm_start(old, TFO_A, tmp_path)
    new = _din(TFO_B, 1)
    fresh = [np.asarray(v.numpy()) for v in new.weights]
    report = WS.warm_start(new, tmp_path, TFO_B)
    assert _check_warm_started(old, fresh, new, report) == 6
    assert report.variables_copied == len(old.weights) - 6 and not report.skipped
    assert "6 tables remapped" in report.summary()
    for seed in range(3):
        tokens = _tokens(seed)
        np.testing.assert_allclose(_scores(new, _encode(tokens, DAY_B)),
                                   _scores(old, _encode(tokens, DAY_A)),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared_tables", [False, True])
def test_daian_warm_start_remaps_both_table_sets_and_skips_the_catalog(
        tmp_path, shared_tables):
    cfg = dataclasses.replace(DAIAN_CFG, uim_shared_tables=shared_tables)
    old = _daian(TFO_A, 0, CATALOG_A, cfg)
    _distinctive(old)
    WS.save_warm_start(old, TFO_A, tmp_path)
    new = _daian(TFO_B, 1, CATALOG_B, cfg)
    fresh = [np.asarray(v.numpy()) for v in new.weights]
    report = WS.warm_start(new, tmp_path, TFO_B)
    tables = _check_warm_started(old, fresh, new, report)
    assert tables == (7 if shared_tables else 7 + 5) - 1  # the price table is copied
    assert report.skipped == ["multimodal_catalog/vectors"]
    for seed in range(3):
        tokens = _tokens(seed)
        np.testing.assert_allclose(_scores(new, _encode(tokens, DAY_B)),
                                   _scores(old, _encode(tokens, DAY_A)),
                                   rtol=1e-5, atol=1e-6)


def test_identical_vocabularies_equal_a_plain_weight_copy(tmp_path):
    old = _daian(TFO_A, 0, CATALOG_A)
    _distinctive(old)
    WS.save_warm_start(old, TFO_A, tmp_path)
    new = _daian(TFO_A, 1, CATALOG_A)
    copied = _daian(TFO_A, 2, CATALOG_A)
    copied.set_weights(old.get_weights())
    report = WS.warm_start(new, tmp_path, TFO_A)
    assert report.new_rows == report.dropped_rows == 0
    for a, b in zip(new.weights, copied.weights):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()),
                                      err_msg=a.path)


def test_saved_directory_layout(tmp_path):
    old = _din(TFO_A, 0)
    WS.save_warm_start(old, TFO_A, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        WS.MANIFEST_FILE, WS.VARIABLES_FILE, WS.VOCABULARIES_FILE]
    manifest = json.loads((tmp_path / WS.MANIFEST_FILE).read_text())
    assert [e["path"] for e in manifest["variables"]] == [v.path for v in old.weights]
    assert manifest["vocabularies"]["item"] == len(DAY_A["item"])
    vocabs = json.loads((tmp_path / WS.VOCABULARIES_FILE).read_text())
    assert vocabs["item"] == {"encoding": "utf-8", "tokens": DAY_A["item"]}
    with np.load(tmp_path / WS.VARIABLES_FILE, allow_pickle=False) as npz:
        assert len(npz.files) == len(old.weights)


def test_other_hidden_units_raise_naming_the_variable(tmp_path):
    WS.save_warm_start(_din(TFO_A, 0), TFO_A, tmp_path)
    other = _din(TFO_B, 1, dataclasses.replace(DIN_CFG, hidden_units=(32, 8)))
    before = [np.asarray(v.numpy()) for v in other.weights]
    with pytest.raises(DaianInputError,
                       match=r"head_0/kernel has shape \[\d+, 32\].*\[\d+, 16\]"):
        WS.warm_start(other, tmp_path, TFO_B)
    for v, b in zip(other.weights, before):  # nothing assigned
        np.testing.assert_array_equal(np.asarray(v.numpy()), b)


def test_another_number_of_variables_raises(tmp_path):
    WS.save_warm_start(_din(TFO_A, 0), TFO_A, tmp_path)
    deeper = _din(TFO_B, 1, dataclasses.replace(DIN_CFG, hidden_units=(16, 8, 4)))
    with pytest.raises(DaianInputError, match="ctr_probability|variables"):
        WS.warm_start(deeper, tmp_path, TFO_B)


def test_din_directory_refused_by_daian(tmp_path):
    WS.save_warm_start(_din(TFO_A, 0), TFO_A, tmp_path)
    with pytest.raises(DaianInputError, match="architecture"):
        WS.warm_start(_daian(TFO_B, 1, CATALOG_B), tmp_path, TFO_B)


def test_vocabulary_not_matching_the_model_raises(tmp_path):
    WS.save_warm_start(_din(TFO_A, 0), TFO_A, tmp_path)
    with pytest.raises(DaianInputError, match="embedding_item/embeddings.*rows"):
        WS.warm_start(_din(TFO_B, 1), tmp_path, TFO_A)  # built on B, told A


def test_unbuilt_model_and_incomplete_directory_raise(tmp_path):
    with pytest.raises(DaianInputError, match="not built"):
        WS.save_warm_start(_daian(TFO_A, 0, CATALOG_A, init_batch=False), TFO_A,
                           tmp_path)
    with pytest.raises(DaianInputError, match="manifest.json"):
        WS.warm_start(_din(TFO_A, 0), tmp_path / "nothing", TFO_A)


def test_structural_key_strips_auto_numbers():
    assert WS.structural_key("functional_2/dense_13/kernel") == "functional/dense/kernel"
    assert WS.structural_key("daian/ctr_embedding/embedding_item/embeddings") == \
        "daian/ctr_embedding/embedding_item/embeddings"


def test_remap_rows_and_non_utf8_tokens():
    old = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)  # pad, a, b, c, OOV
    new = -np.ones((4, 2), np.float32)  # pad, c, d, OOV
    table, carried, fresh, dropped = WS.remap_rows(old, [b"a", b"b", b"c"], new,
                                                   [b"c", b"d"])
    np.testing.assert_array_equal(table, [[0, 1], [6, 7], [-1, -1], [8, 9]])
    assert (carried, fresh, dropped) == (1, 1, 2)
    tokens = [b"\xff\xfe", b"ok"]
    assert WS._decode_tokens(WS._encode_tokens(tokens)) == tokens


def test_id_layout_is_transforms(tmp_path):
    """The layout `remap_rows` assumes is `data.transform`'s: token i → id i + 1, an
    unknown or empty token → V + 1 (id 0 is the history's padding)."""
    import tensorflow as tf

    from daian_tf.data.transform import _to_ids

    path = tmp_path / "vocab_x"
    path.write_text("b\na\nc\n")
    # traced, as tf.Transform runs it: called eagerly, `tft.apply_vocabulary` puts its
    # eager result in the global graph's schema-override collection, and every later
    # tf.Transform analysis in this process reads that collection and fails
    # ("Tensor.name is undefined when eager execution is enabled")
    graph = tf.compat.v1.get_default_graph()

    def filled_collections():
        return {k: list(graph.get_collection(k))
                for k in graph.get_all_collection_keys() if graph.get_collection(k)}

    before = filled_collections()
    ids = tf.function(_to_ids)(tf.constant([b"b", b"a", b"c", b"zz", b""]),
                               tf.constant(str(path)))
    assert ids.numpy().tolist() == [1, 2, 3, 4, 4]
    assert filled_collections() == before


def test_din_restored_by_load_model_is_refused_with_advice(tmp_path):
    """`load_model` rebuilds DIN's tables from their config, without their vocabulary."""
    path = tmp_path / "din.keras"
    _din(TFO_A, 0).save(path)
    with pytest.raises(DaianInputError, match="load_weights"):
        WS.save_warm_start(keras.models.load_model(path), TFO_A, tmp_path / "ws")
