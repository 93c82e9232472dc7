"""Evaluation: score splits with a model, tabulate metrics, the experiments' blocks.

- `columns`: a transformed split as columns, scored in-process (`collect_columns`);
- `raw_split`: a built (untransformed) split as serving requests, scored by any callable
  (a gRPC client in the quick start);
- `tables`: metric rows (`ranking_metrics`) and markdown tables;
- `runs`: what an experiment measures per run (GAUC by diversity group, the JS
  divergence of p̂ for specific- and broad-intent users) and its reference rows.

The metric formulas themselves are `daian_tf.metrics` (numpy, checked against
scikit-learn).
"""
