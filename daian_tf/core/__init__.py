"""The bottom layer: what every other module may import, importing nothing of ours.

- `config`: the typed configuration (dataclasses, YAML loading) and the packaged
  default `base.yaml`;
- `features`: every feature key of the examples and of the transformed data;
- `names`: split, file, model, metric and output names;
- `signatures`: the names of the serving contract (signatures, inputs, outputs);
- `similarity_range`: the I-2 range `[lo, hi]` and the one rule that cuts it into
  levels and bins;
- `errors`: the errors raised for bad input.

Nothing here imports TensorFlow, Keras or Beam (the layer order is checked by
tests/unit/test_architecture.py against the README's "Architecture" table).
"""
