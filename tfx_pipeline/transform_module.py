"""Transform module: thin, the logic is `daian_tf.data.transform.preprocessing_fn`.

TFX loads it by import path (`preprocessing_fn='tfx_pipeline.transform_module.
preprocessing_fn'`), so no module file is copied onto workers (PITFALLS: module files).
"""

from daian_tf.data.transform import preprocessing_fn  # noqa: F401
