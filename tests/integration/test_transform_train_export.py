"""Transform → fit → export → reload in a fresh process (DESIGN.md "data path").

On small random but valid training examples (spec/DATA.md §2): `preprocessing_fn` via
tf.Transform on Beam, a few `model.fit` steps, the SavedModel export, then scoring the
export in a fresh subprocess with the transform output deleted, and `saved_model_cli`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft  # noqa: F401 - sets TF_USE_LEGACY_KERAS, as in TFX

import keras
from daian_tf.core import features as F
from daian_tf.data.dataset import make_dataset
from daian_tf.core.config import Config, ModelConfig, SampleConfig, TrainConfig
from daian_tf.core.errors import DaianInputError
from daian_tf.core.names import EVAL, TRAIN, VALIDATION
from daian_tf.core.features import vocab_filename
from daian_tf.core.signatures import (INPUT_EXAMPLES, OUTPUT_CTR, SIGNATURE_CTR,
                                      SIGNATURE_RANK, SIGNATURE_SERVING_DEFAULT)
from daian_tf.data.transform import raw_feature_spec, serving_feature_spec, vocab_sizes
from daian_tf.data.transform_beam import transform_samples
from daian_tf.export.pruned_transform import PrunedTransform
from daian_tf.export.saved_model import (WARMUP_DIR, WARMUP_FILE, export_serving_model,
                                         to_serving_example)
from daian_tf.models import serving_input_keys
from daian_tf.models.daian import CANDIDATE_KEYS
from daian_tf.training.fit import fit_model
from daian_tf.workflows import read_report, train_from_samples

pytestmark = pytest.mark.slow

USER_COLUMNS = ("gender", "age_bucket")
MAX_LEN = 6  # short, so that truncation to the most recent steps is exercised
SIM_RANGE = (-0.2, 0.8)
NUM_ITEMS = 30
OOV_ITEM = b"item_never_seen"


def _cfg() -> Config:
    return Config(
        samples=SampleConfig(user_columns=USER_COLUMNS, max_seq_len=MAX_LEN,
                             num_intent_levels=4),
        model=ModelConfig(embedding_dim=4, hidden_units=(16, 8),
                          attention_units=(8,), num_sim_bins=5),
        train=TrainConfig(batch_size=32, epochs=1, shuffle_buffer=64))


def _item_side(i: int) -> dict:
    """Fixed side features of catalog item i."""
    return {"item_id": f"item{i}".encode(), "category_id": f"cat{i % 5}".encode(),
            "brand_id": f"brand{i % 7}".encode(), "shop_id": f"shop{i % 3}".encode(),
            "price": float(1 + (i * 37) % 100)}


def _bytes(*values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(*values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(*values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def random_example(rng: np.random.Generator, cfg: Config, index: int,
                   max_hist: int = MAX_LEN + 4) -> bytes:
    """One random but valid training example of spec/DATA.md §2."""
    n = cfg.samples.num_intent_levels
    user = int(rng.integers(8))
    trigger, target = (_item_side(int(i)) for i in rng.integers(NUM_ITEMS, size=2))
    hist = [_item_side(int(i)) for i in rng.integers(NUM_ITEMS,
                                                      size=rng.integers(max_hist + 1))]
    intent = rng.dirichlet(np.ones(n)).astype(np.float32)
    feature = {
        F.REQUEST_ID: _bytes(f"r{index // 4}".encode()),
        F.USER_ID: _bytes(f"u{user}".encode()),
        F.TIMESTAMP: _ints(1_700_000_000 + index),
        F.user_feature("gender"): _bytes(b"fm"[user % 2:user % 2 + 1]),
        F.user_feature("age_bucket"): _bytes(f"a{user % 3}".encode()),
        F.HIST_BEHAVIOR: _bytes(*[F.BEHAVIOR_TYPES[int(rng.integers(4))].encode()
                                  for _ in hist]),
        F.HIST_TIME_DELTA: _ints(*[int(v) for v in
                                   sorted(rng.integers(1, 10**6, len(hist)))[::-1]]),
        F.LABEL: _ints(int(rng.random() < 0.3)),
        F.INTENT_LABEL: _floats(*intent),
        F.INTENT_MASK: _ints(1),
        F.INTENT_LABEL_LOO: _floats(*intent),
        F.INTENT_MASK_LOO: _ints(int(rng.integers(2))),
        F.TARGET_SIM: _floats(float(rng.uniform(-0.5, 1.0))),
        F.INTENT_DIVERSITY: _ints(int(rng.integers(3))),
        F.P_TRUE: _floats(float(rng.random())),
    }
    for side, key in zip(F.ITEM_SIDE, F.TRIGGER_ITEM_KEYS):
        feature[key] = _bytes(trigger[side])
    for side, key in zip(F.ITEM_SIDE, F.TARGET_ITEM_KEYS):
        feature[key] = _bytes(target[side])
    for side, key in zip(F.HIST_SIDE, F.HIST_ITEM_KEYS):
        feature[key] = _bytes(*[h[side] for h in hist])
    feature[F.TRIGGER_PRICE] = _floats(trigger["price"])
    feature[F.TARGET_PRICE] = _floats(target["price"])
    return tf.train.Example(
        features=tf.train.Features(feature=feature)).SerializeToString()


def write_random_samples(directory: Path, cfg: Config, num_train: int = 320,
                         num_eval: int = 160, seed: int = 0,
                         num_validation: int = 96, sim_range=SIM_RANGE) -> dict:
    """A sample builder's output: train/validation/eval gzipped TFRecords and a
    report.json with the splits' counts and `sim_range`."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in ((TRAIN, num_train), (VALIDATION, num_validation),
                         (EVAL, num_eval)):
        (directory / split).mkdir(parents=True)
        examples = [random_example(rng, cfg, i) for i in range(count)]
        for shard in range(2):
            path = directory / split / f"data-{shard:05d}-of-00002.tfrecord.gz"
            with tf.io.TFRecordWriter(str(path), options="GZIP") as w:
                for e in examples[shard::2]:
                    w.write(e)
        written[split] = examples
    report = {"sim_range": list(sim_range),
              "splits": {s: {"samples": len(e), "requests": len(e)}
                         for s, e in written.items()},
              "validation_boundary_timestamp": 0, "split_boundary_timestamp": 86400}
    (directory / "report.json").write_text(json.dumps(report))
    return written


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Samples → transform → a few fit steps → export; everything the tests read."""
    root = tmp_path_factory.mktemp("daian")
    cfg = _cfg()
    examples = write_random_samples(root / "samples", cfg)
    paths = transform_samples(str(root / "samples"), str(root / "out"), cfg,
                              list(SIM_RANGE))
    tfo = tft.TFTransformOutput(paths["transform_output"])
    model, history = fit_model(cfg, tfo, paths[TRAIN], paths[VALIDATION],
                               steps_per_epoch=3, validation_steps=2)
    export_dir = str(root / "serving_model" / "1")
    export_serving_model(model, tfo, export_dir, cfg.samples,
                         warmup_examples=examples["eval"][:3])
    return {"root": root, "cfg": cfg, "examples": examples, "paths": paths,
            "tfo": tfo, "model": model, "history": history, "export_dir": export_dir}


def _transform(tfo, cfg, serialized):
    """Raw serialized examples → transformed features (numpy), via the tft layer."""
    parsed = tf.io.parse_example(tf.constant(serialized),
                                 serving_feature_spec(cfg.samples))
    return {k: v.numpy() for k, v in tfo.transform_features_layer()(parsed).items()}


def _parse_raw(cfg, serialized):
    return {k: v for k, v in tf.io.parse_example(
        tf.constant(serialized), raw_feature_spec(cfg.samples)).items()}


def test_shared_vocabulary_padding_truncation_and_oov(run):
    tfo, cfg = run["tfo"], run["cfg"]
    serialized = run["examples"]["train"][:40]
    out = _transform(tfo, cfg, serialized)
    raw = _parse_raw(cfg, serialized)
    vocab = tfo.vocabulary_by_name(vocab_filename("item"))
    index = {v: i + 1 for i, v in enumerate(vocab)}  # 0 is padding
    oov_id = len(vocab) + 1
    assert set(vocab) <= {f"item{i}".encode() for i in range(NUM_ITEMS)}
    for key in (F.TRIGGER_ITEM_ID, F.TARGET_ITEM_ID):
        expected = [index[v] for v in raw[key].numpy()]
        np.testing.assert_array_equal(out[F.xf(key)], expected)
    histories = tf.RaggedTensor.from_sparse(raw[F.HIST_ITEM_ID]).to_list()
    assert out[F.xf(F.HIST_ITEM_ID)].shape == (len(serialized), MAX_LEN)
    for row, hist in enumerate(histories):
        recent = [index[v] for v in hist][-MAX_LEN:]  # the most recent, oldest first
        expected = recent + [F.PADDING_ID] * (MAX_LEN - len(recent))
        np.testing.assert_array_equal(out[F.xf(F.HIST_ITEM_ID)][row], expected)
    assert any(len(h) > MAX_LEN for h in histories)
    assert any(len(h) < MAX_LEN for h in histories)

    # An unseen item id gets the same reserved id as trigger, target and history.
    oov = tf.train.Example.FromString(serialized[0])
    for key in (F.TRIGGER_ITEM_ID, F.TARGET_ITEM_ID):
        oov.features.feature[key].bytes_list.value[:] = [OOV_ITEM]
    oov.features.feature[F.HIST_ITEM_ID].bytes_list.value[:] = [OOV_ITEM]
    oov_out = _transform(tfo, cfg, [oov.SerializeToString()])
    for key in (F.TRIGGER_ITEM_ID, F.TARGET_ITEM_ID):
        assert oov_out[F.xf(key)][0] == oov_id
    assert oov_out[F.xf(F.HIST_ITEM_ID)][0].tolist() == [oov_id] + [0] * (MAX_LEN - 1)


def test_vocab_sizes_count_padding_and_oov(run):
    tfo, cfg = run["tfo"], run["cfg"]
    raw = _parse_raw(cfg, run["examples"]["train"])
    items = set(raw[F.TRIGGER_ITEM_ID].numpy()) | set(raw[F.TARGET_ITEM_ID].numpy()) \
        | set(raw[F.HIST_ITEM_ID].values.numpy())
    shops = set(raw[F.TRIGGER_SHOP_ID].numpy()) | set(raw[F.TARGET_SHOP_ID].numpy())
    users = set(raw[F.USER_ID].numpy())
    sizes = vocab_sizes(tfo, USER_COLUMNS)
    assert sizes["item"] == len(items) + 2
    assert sizes["shop"] == len(shops) + 2
    assert sizes["user_id"] == len(users) + 2
    assert sizes[F.user_feature("gender")] == 2 + 2


def test_similarity_bins_and_shared_price_buckets(run):
    tfo, cfg = run["tfo"], run["cfg"]
    serialized = run["examples"]["eval"]
    out = _transform(tfo, cfg, serialized)
    raw = _parse_raw(cfg, serialized)
    lo, hi = SIM_RANGE
    n = cfg.model.num_sim_bins
    sim = raw[F.TARGET_SIM].numpy().astype(np.float64)
    expected = np.clip(np.floor((sim - lo) / (hi - lo) * n), 0, n - 1)
    np.testing.assert_array_equal(out[F.SIM_BIN], expected)
    # One set of price edges for trigger and target: equal prices, equal buckets.
    prices = np.concatenate([raw[F.TRIGGER_PRICE].numpy(), raw[F.TARGET_PRICE].numpy()])
    buckets = np.concatenate([out[F.xf(F.TRIGGER_PRICE)], out[F.xf(F.TARGET_PRICE)]])
    for p in np.unique(prices):
        assert len(set(buckets[prices == p])) == 1
    order = np.argsort(prices)
    assert np.all(np.diff(buckets[order]) >= 0)  # monotone in price
    assert buckets.min() >= 0 and buckets.max() < F.PRICE_BUCKETS
    assert len(set(buckets)) >= F.PRICE_BUCKETS // 2


def test_transformed_files_feed_the_model(run):
    tfo, model = run["tfo"], run["model"]
    ds = make_dataset(run["paths"]["eval"], tfo, batch_size=50, shuffle=False,
                      input_keys=serving_input_keys(model), with_user_key=True)
    total = 0
    for inputs, label, user in ds:
        assert set(inputs) == set(serving_input_keys(model))
        assert inputs[F.xf(F.HIST_ITEM_ID)].shape[1] == MAX_LEN
        assert set(label.numpy()) <= {0.0, 1.0}
        assert all(u.startswith(b"u") for u in user.numpy())
        total += len(label)
    assert total == len(run["examples"]["eval"])
    assert np.isfinite(run["history"]["loss"]).all()


def test_model_is_keras3_not_tf_keras(run):
    layers = list(run["model"]._flatten_layers())
    assert layers
    for layer in layers:
        assert isinstance(layer, keras.layers.Layer), layer
        assert not type(layer).__module__.startswith("tf_keras"), type(layer)


_SCORE_SCRIPT = """
import json, sys
import tensorflow as tf
export_dir, examples_path, out_path = sys.argv[1:]
examples = [bytes.fromhex(h) for h in json.load(open(examples_path))]
loaded = tf.saved_model.load(export_dir)
result = {}
for name in (%r, %r):
    fn = loaded.signatures[name]
    result[name] = fn(**{%r: tf.constant(examples)})[%r].numpy().tolist()
json.dump(result, open(out_path, "w"))
""" % (SIGNATURE_SERVING_DEFAULT, SIGNATURE_CTR, INPUT_EXAMPLES, OUTPUT_CTR)


def _oov_variant(serialized: bytes) -> bytes:
    example = tf.train.Example.FromString(serialized)
    for key in (F.TRIGGER_ITEM_ID, F.TARGET_ITEM_ID, F.USER_ID):
        example.features.feature[key].bytes_list.value[:] = [OOV_ITEM]
    example.features.feature[F.HIST_ITEM_ID].bytes_list.value.append(OOV_ITEM)
    del example.features.feature[F.TARGET_SHOP_ID]  # a missing feature still parses
    return example.SerializeToString()


def test_export_scores_match_in_fresh_process_without_transform_output(run):
    cfg, tfo, model = run["cfg"], run["tfo"], run["model"]
    eval_examples = run["examples"]["eval"][:6]
    requests = [to_serving_example(e, cfg.samples) for e in eval_examples]
    requests += [_oov_variant(r) for r in requests[:3]]
    for r in requests:  # requests carry no label
        assert F.LABEL not in tf.train.Example.FromString(r).features.feature

    transformed = _transform(tfo, cfg, requests)
    expected = np.asarray(model.predict_on_batch(
        {k: transformed[k] for k in serving_input_keys(model)})).reshape(-1)

    root = run["root"]
    moved = root / "transform_output_moved"
    shutil.move(run["paths"]["transform_output"], moved)
    try:
        examples_path, out_path = root / "requests.json", root / "scores.json"
        examples_path.write_text(json.dumps([r.hex() for r in requests]))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        subprocess.run([sys.executable, "-c", _SCORE_SCRIPT, run["export_dir"],
                        str(examples_path), str(out_path)], check=True, env=env,
                       timeout=300)
    finally:
        shutil.move(str(moved), run["paths"]["transform_output"])
    scores = json.loads(out_path.read_text())
    for name in (SIGNATURE_SERVING_DEFAULT, SIGNATURE_CTR):
        np.testing.assert_allclose(scores[name], expected, atol=1e-5)
    assert np.all((expected > 0) & (expected < 1))


def test_export_runs_under_tensorflows_cpp_loader_as_tf_serving_runs_it(run):
    """DIN's export under `tensorflow::LoadSavedModel` + `Session::Run`: the warmup
    requests and every signature, OOV ids and a missing feature among the requests,
    answer as `tf.saved_model.load` and as the Keras model."""
    from serving.cc_loader import check_export, run_signatures

    cfg, tfo, model = run["cfg"], run["tfo"], run["model"]
    requests = [to_serving_example(e, cfg.samples) for e in run["examples"]["eval"][:8]]
    requests += [_oov_variant(r) for r in requests[:3]]
    checked = check_export(run["export_dir"], requests)
    assert [c.source for c in checked[:3]] == [f"warmup request {i}" for i in range(3)]
    assert sorted(c.signature for c in checked[3:]) == sorted(
        [SIGNATURE_CTR, SIGNATURE_RANK, SIGNATURE_SERVING_DEFAULT])
    assert max(c.max_abs_diff for c in checked) <= 1e-5
    transformed = _transform(tfo, cfg, requests)
    expected = np.asarray(model.predict_on_batch(
        {k: transformed[k] for k in serving_input_keys(model)})).reshape(-1)
    [served] = run_signatures(run["export_dir"], [
        (SIGNATURE_SERVING_DEFAULT, {INPUT_EXAMPLES: requests})])
    np.testing.assert_allclose(served[OUTPUT_CTR], expected, atol=1e-5)


def test_pruned_transform_is_the_layer_on_its_outputs_from_their_raw_features(run):
    """`rank`'s two transforms: the tft layer's values of the candidate features,
    computed from the target's raw features alone (OOV and missing values too), and of
    the other inputs from the context's raw features."""
    tfo, cfg = run["tfo"], run["cfg"]
    layer = tfo.transform_features_layer()
    outputs = sorted(k for k in serving_input_keys(run["model"]) if k in CANDIDATE_KEYS)
    assert outputs  # ids, price bucket and raw id of the target
    pruned = PrunedTransform(layer, outputs)
    # the raw features those outputs come from, by preprocessing_fn: the target's
    assert pruned.input_keys == sorted(F.TARGET_KEYS)

    requests = [to_serving_example(e, cfg.samples) for e in run["examples"]["eval"][:20]]
    requests += [_oov_variant(r) for r in requests[:3]]  # OOV ids, a missing shop id
    expected = _transform(tfo, cfg, requests)
    spec = serving_feature_spec(cfg.samples)
    got = pruned(tf.io.parse_example(tf.constant(requests),
                                     {k: spec[k] for k in pruned.input_keys}))
    assert sorted(got) == outputs
    for key in outputs:
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
    assert len(set(expected[F.xf(F.TARGET_ITEM_ID)].tolist())) > 5  # not all OOV

    # the context's side: every other input of the model, from the context's own raw
    # features (never the target's)
    context_outputs = sorted(k for k in serving_input_keys(run["model"])
                             if k not in CANDIDATE_KEYS)
    context = PrunedTransform(layer, context_outputs)
    assert not set(context.input_keys) & set(F.TARGET_KEYS)
    got = context(tf.io.parse_example(tf.constant(requests),
                                      {k: spec[k] for k in context.input_keys}))
    assert sorted(got) == context_outputs
    for key in context_outputs:
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)

    with pytest.raises(KeyError, match="no output"):
        PrunedTransform(layer, ["not_a_feature_xf"])
    with pytest.raises(KeyError, match=F.TARGET_PRICE):
        pruned({k: v for k, v in tf.io.parse_example(tf.constant(requests), spec).items()
                if k != F.TARGET_PRICE})


def test_saved_model_cli_shows_the_contract(run):
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", run["export_dir"], "--all"],
                           check=True, capture_output=True, text=True,
                           timeout=300).stdout
    for name in (SIGNATURE_SERVING_DEFAULT, SIGNATURE_CTR):
        block = shown.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
        inputs, outputs = block.split("The given SavedModel SignatureDef contains the "
                                      "following output(s):")
        assert f"inputs['{INPUT_EXAMPLES}'] tensor_info:" in inputs
        assert "dtype: DT_STRING" in inputs and "shape: (-1)" in inputs
        assert inputs.count("tensor_info:") == 1
        assert f"outputs['{OUTPUT_CTR}'] tensor_info:" in outputs
        assert "dtype: DT_FLOAT" in outputs and "shape: (-1)" in outputs


def test_warmup_requests_are_predict_logs(run):
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(run["export_dir"]) / WARMUP_DIR / WARMUP_FILE
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert len(logs) == 3
    loaded = tf.saved_model.load(run["export_dir"])
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.signature_name == SIGNATURE_SERVING_DEFAULT
        examples = tf.make_ndarray(request.inputs[INPUT_EXAMPLES])
        assert examples.shape == (1,)
        example = tf.train.Example.FromString(examples[0])
        assert F.LABEL not in example.features.feature
        ctr = loaded.signatures[SIGNATURE_SERVING_DEFAULT](
            **{INPUT_EXAMPLES: tf.constant(examples)})[OUTPUT_CTR]
        assert ctr.shape == (1,)


def test_train_from_samples_uses_the_reports_similarity_range(tmp_path):
    """`daian train` bins with the sample builder's range (report.json), as data."""
    cfg = _cfg()
    report_range = [-0.1, 0.45]  # not the range the random similarities span
    examples = write_random_samples(tmp_path / "samples", cfg, num_train=160,
                                    num_eval=96, seed=1, sim_range=report_range)
    summary = train_from_samples(str(tmp_path / "samples"), str(tmp_path / "out"), cfg)
    assert summary["sim_range"] == report_range
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text()) == summary
    for result in (summary["eval"], summary["baselines"]["popularity"]):
        assert 0.0 <= result["auc"] <= 1.0 and result["logloss"] > 0
        assert result["num_examples"] == 96
        assert result["gauc_num_users"] + result["gauc_num_skipped"] == 8
    assert (Path(summary["serving_model_dir"]) / "saved_model.pb").exists()
    assert (Path(summary["serving_model_dir"]) / WARMUP_DIR / WARMUP_FILE).exists()

    tfo = tft.TFTransformOutput(summary["transform_output"])
    bins = _transform(tfo, cfg, examples["train"])[F.SIM_BIN]
    sim = _parse_raw(cfg, examples["train"])[F.TARGET_SIM].numpy().astype(np.float64)
    lo, hi = report_range
    n = cfg.model.num_sim_bins
    edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
    expected = [max([0] + [i for i in range(1, n) if s >= edges[i]]) for s in sim]
    clear = np.abs(sim[:, None] - np.asarray(edges[1:-1])).min(axis=1) > 1e-6
    np.testing.assert_array_equal(bins[clear], np.asarray(expected)[clear])


def test_a_missing_or_bad_report_is_refused(tmp_path):
    """No re-estimation: without the builder's report (or its range) nothing runs."""
    with pytest.raises(DaianInputError, match="report.json not found"):
        read_report(str(tmp_path))
    (tmp_path / "report.json").write_text(json.dumps({"sim_range": [0.7, -0.1]}))
    with pytest.raises(DaianInputError, match="lo < hi"):
        read_report(str(tmp_path))
    (tmp_path / "report.json").write_text(json.dumps({"sim_range": [-0.1, 0.7]}))
    assert read_report(str(tmp_path))["sim_range"] == [-0.1, 0.7]


def test_predict_split_and_popularity_metrics_against_the_raw_examples(run):
    """Evaluation columns of the transformed eval split against the raw examples
    (order-free: the transform may reorder rows): the same (user, label) pairs, the
    model's scores of the raw examples through the tft layer, and the popularity row
    refitted on raw target ids."""
    from daian_tf.evaluation.columns import popularity_metrics, predict_split
    from daian_tf.evaluation.tables import ranking_metrics
    from daian_tf.models.popularity import PopularityBaseline

    tfo, cfg, model = run["tfo"], run["cfg"], run["model"]
    labels, scores, users = predict_split(model, run["paths"]["eval"], tfo)
    raw = {split: _parse_raw(cfg, run["examples"][split]) for split in ("train", "eval")}
    raw_pairs = sorted(zip(raw["eval"][F.USER_ID].numpy().ravel().tolist(),
                           raw["eval"][F.LABEL].numpy().ravel().tolist()))
    assert sorted(zip(users.tolist(), labels.tolist())) == raw_pairs
    transformed = _transform(tfo, cfg, run["examples"]["eval"])
    expected = np.asarray(model.predict_on_batch(
        {k: transformed[k] for k in serving_input_keys(model)})).ravel()
    np.testing.assert_allclose(np.sort(scores), np.sort(expected), rtol=1e-5, atol=1e-6)

    def items_labels(split):
        return (raw[split][F.TARGET_ITEM_ID].numpy().ravel(),
                raw[split][F.LABEL].numpy().ravel().astype(np.int64))

    baseline = PopularityBaseline().fit(*items_labels("train"))
    eval_items, eval_labels = items_labels("eval")
    want = ranking_metrics(eval_labels, baseline.predict(eval_items),
                           raw["eval"][F.USER_ID].numpy().ravel())
    got = popularity_metrics(run["paths"]["train"], run["paths"]["eval"], tfo)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
