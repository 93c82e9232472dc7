"""Profile (not a test): where a DAIAN training step spends its time, block by block.

Times the forward and backward pass (gradients of the output's sum with respect to the
block's variables and its float inputs) of each block of the default DAIAN on one batch
of the training bench's data (`bench/bench_training.py` prepares it under `--workdir`),
each in its own `tf.function`, median over `--steps` calls, 2 TF threads:
the CTR embedding, UIM (its own embedding, pooling and MLP), DIN attention pooling,
I2E, explicit intent exploitation (subsequence attention), the catalog lookups, and
the whole model. The optimizer's update is not included.

usage: python bench/profile_daian_blocks.py [--batch 1024] [--steps 20]
       [--workdir /tmp/daian_bench_training]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workdir", default="/tmp/daian_bench_training")
    args = ap.parse_args()
    meta = Path(args.workdir) / "data.json"
    if not meta.exists():
        raise SystemExit(f"{meta} not found: run bench/bench_training.py --workdir "
                         f"{args.workdir} first (it prepares the data)")

    import tensorflow as tf
    import tensorflow_transform as tft
    from keras import ops

    from daian_tf.data import features as F
    from daian_tf.data.dataset import make_dataset
    from daian_tf.layers import embedding as emb
    from daian_tf.layers.catalog import cosine
    from daian_tf.layers.explicit_intent import subsequence_mask
    from daian_tf.models import serving_input_keys
    from daian_tf.training import trainer
    from daian_tf.training.config import load_config

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    info = json.loads(meta.read_text())
    tft_out = tft.TFTransformOutput(info["transform_output"])
    cfg = load_config(REPO / "configs" / "base.yaml")
    model = trainer.build_model(cfg, tft_out, sim_range=info["sim_range"],
                                catalog=trainer.model_catalog(info["raw"]))
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
    print(f"batch {args.batch}; forward + backward, median of {args.steps} calls; "
          f"mean subsequence length {float(tf.reduce_mean(tf.reduce_sum(tf.cast(sub, tf.float32), 1))):.1f}")
    print("| block | ms | share of whole model |")
    print("|---|---:|---:|")
    times = {}
    for name, (fn, variables) in blocks.items():
        times[name] = _time(fn, variables, args.steps)
    for name, ms in times.items():
        print(f"| {name} | {ms:.1f} | {ms / times['whole model']:.0%} |")


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
