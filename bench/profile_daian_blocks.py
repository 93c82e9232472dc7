"""Profile (not a test): where a DAIAN training step spends its time, block by block.

Times the forward and backward pass (gradients of the output's sum with respect to the
block's variables and its float inputs) of each block of the default DAIAN on one batch
of the training bench's data (`bench/bench_training.py` prepares it under `--workdir`),
each in its own `tf.function`, median over `--steps` calls, 2 TF threads:
the CTR embedding, UIM (its own embedding, pooling and MLP), DIN attention pooling,
I2E, explicit intent exploitation (subsequence attention), the catalog lookups, and
the whole model. The optimizer's update is not included. Then the forward FLOPs per
sample that TF's profiler counts in the frozen inference graph of DAIAN, of our DIN and of
the lean probe (`../shared/bench/lean_din.py`, same table sizes).

usage: python bench/profile_daian_blocks.py [--batch 1024] [--steps 20]
       [--workdir /tmp/daian_bench_training] [--lean ../shared/bench/lean_din.py]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LEAN = REPO.parent / "shared" / "bench" / "lean_din.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workdir", default="/tmp/daian_bench_training")
    ap.add_argument("--lean", default=str(DEFAULT_LEAN))
    args = ap.parse_args()
    meta = Path(args.workdir) / "data.json"
    if not meta.exists():
        raise SystemExit(f"{meta} not found: run bench/bench_training.py --workdir "
                         f"{args.workdir} first (it prepares the data)")

    import tensorflow as tf
    import tensorflow_transform as tft
    from keras import ops

    from daian_tf.core import features as F
    from daian_tf.data.dataset import make_dataset
    from daian_tf.layers import embedding as emb
    from daian_tf.layers.catalog import cosine
    from daian_tf.layers.explicit_intent import subsequence_mask
    from daian_tf.core.config import DEFAULT_CONFIG_FILE, load_config
    from daian_tf.data.transform import vocab_sizes
    from daian_tf.models import serving_input_keys
    from daian_tf.models.factory import build_model
    from daian_tf.workflows import catalog_for

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    info = json.loads(meta.read_text())
    tft_out = tft.TFTransformOutput(info["transform_output"])
    cfg = load_config(DEFAULT_CONFIG_FILE)
    model = build_model(cfg, vocab_sizes(tft_out, tuple(cfg.samples.user_columns)),
                        sim_range=info["sim_range"], catalog=catalog_for(cfg, info["raw"]))
    ds = make_dataset(info["train"], tft_out, args.batch, shuffle=True, seed=0,
                      input_keys=serving_input_keys(model), cache="memory")
    x, _ = next(iter(ds))
    model(x)
    e = model.embedding(x)
    hist = e[emb.HISTORY]
    v_int = model.request_side(x)["v_int"]

    def catalog_part():
        m_tr = model.catalog(x[F.raw(F.TRIGGER_ITEM_ID)])
        m_hist = model.catalog(x[F.raw(F.HIST_ITEM_ID)])
        return cosine(m_hist, ops.expand_dims(m_tr, 1))

    sub = subsequence_mask(catalog_part(), e[emb.MASK], model.threshold)

    def flat(outputs: dict):
        return tf.concat([tf.reshape(v, [args.batch, -1]) for v in outputs.values()
                          if v.dtype == tf.float32], axis=1)

    blocks = {
        "CTR embedding": (lambda: flat(model.embedding(x)),
                          model.embedding.trainable_variables),
        "UIM (own tables, pooling, MLP)": (lambda: model.predict_intent(x, training=True),
                                           model.uim_variables()),
        "DIN attention pooling": (
            lambda: model.din_pooling(e[emb.TARGET_QUERY], hist, mask=e[emb.MASK]),
            model.din_pooling.trainable_variables + [hist]),
        "I2E (implicit intent)": (
            lambda: model.implicit(e[emb.TRIGGER], v_int, hist, mask=e[emb.MASK],
                                   training=True),
            model.implicit.trainable_variables + [hist]),
        "explicit intent (MHSA + MHTA)": (
            lambda: model.explicit(e[emb.TARGET], hist, sub, training=True),
            model.explicit.trainable_variables + [hist]),
        "catalog lookups + cosine (forward)": (catalog_part, []),
        "whole model": (lambda: model(x, training=True), model.trainable_variables),
    }
    sub_len = float(tf.reduce_mean(tf.reduce_sum(tf.cast(sub, tf.float32), axis=1)))
    print(f"batch {args.batch}; forward + backward, median of {args.steps} calls; "
          f"mean subsequence length {sub_len:.1f}")
    print("| block | ms | share of whole model |")
    print("|---|---:|---:|")
    times = {}
    for name, (fn, variables) in blocks.items():
        times[name] = _time(fn, variables, args.steps)
    for name, ms in times.items():
        print(f"| {name} | {ms:.1f} | {ms / times['whole model']:.0%} |")

    din = build_model(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="din")),
        vocab_sizes(tft_out, tuple(cfg.samples.user_columns)))
    din_x = {k: x[k] for k in serving_input_keys(din)}
    din(din_x)
    print("\nforward FLOPs per sample (tf.compat.v1.profiler, frozen inference graph):")
    per_sample = {name: _flops(m, inputs) / args.batch
                  for name, m, inputs in (("DAIAN", model, x), ("DIN", din, din_x))}
    print(f"DAIAN {per_sample['DAIAN']:,.0f}; DIN {per_sample['DIN']:,.0f}; "
          f"lean probe {_lean_flops(args.lean, tft_out, cfg, args.batch):,.0f}")


def _flops(model, inputs) -> int:
    """Float operations of one forward call on `inputs`, as TF's profiler counts them
    (ops without a registered count are left out)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    fn = tf.function(lambda batch: model(batch, training=False))
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), inputs)
    graph = convert_variables_to_constants_v2(fn.get_concrete_function(specs)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def _lean_flops(path: str, tft_out, cfg, batch: int) -> float:
    """Forward FLOPs per sample of the lean probe with our table sizes."""
    import tensorflow as tf

    from daian_tf.data.transform import vocab_sizes

    spec = importlib.util.spec_from_file_location("lean_din", path)
    lean = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lean)
    sizes = vocab_sizes(tft_out, tuple(cfg.samples.user_columns))
    model = lean.build(argparse.Namespace(seq=50, items=sizes["item"],
                                          categories=sizes["category"],
                                          users=sizes["user_id"], dim=16))
    inputs = {name: tf.ones((batch, 50) if name.startswith("hist") else (batch,), "int32")
              for name in ("hist_item", "hist_cat", "target_item", "target_cat",
                           "trigger_item", "user")}
    model(inputs)
    return _flops(model, inputs) / batch


def _time(fn, variables, steps: int) -> float:
    """Median milliseconds of one forward (+ backward when `variables`) call."""
    import keras
    import tensorflow as tf

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch([v for v in variables if not isinstance(v, keras.Variable)])
            loss = tf.reduce_sum(tf.cast(fn(), tf.float32))
        return tape.gradient(loss, variables) if variables else loss

    step()  # tracing
    samples = []
    for _ in range(steps):
        start = time.perf_counter()
        step()  # CPU: returns when the values are computed
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


if __name__ == "__main__":
    main()
