"""`InfraCheck`: the candidate SavedModel run as TF Serving runs it, before the push.

TFX's `InfraValidator` starts a real `tensorflow_model_server` (a Docker container or
a local binary) on the model and blesses it if it loads and answers. Neither exists
here, and the difference it guards against is real: an export can load and answer in
Python (`tf.saved_model.load`, what our local server uses) and fail in TensorFlow's
C++ `LoadSavedModel` (what `tensorflow_model_server` links), as our exports did before
`daian_tf/export` stopped tracking the Keras model (keras #20095). This component runs
the C++ loader itself (`serving.cc_loader.check_export`): the export's warmup
requests, then every signature on the first `num_examples` of the eval split, each
answer compared with the local server's.

It writes the `InfraBlessing` TFX's `Pusher` reads (`infra_blessing=`), with
`InfraValidator`'s property (`blessed`: 1 or 0) and marker files (`INFRA_BLESSED`,
`INFRA_NOT_BLESSED`), plus `reason` (one line: what ran, or what failed). A machine
without a C++ compiler cannot build the runner: the check is then skipped and the
model blessed, with the reason saying so (the pipeline image has `g++`).
"""

import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import path_utils

from daian_tf.core.names import EVAL
from tfx_pipeline.components.push_gate import REASON_KEY  # one name for both blessings

BLESSED_KEY = "blessed"  # InfraValidator's (private there), what the Pusher reads
BLESSED_FILE, NOT_BLESSED_FILE = "INFRA_BLESSED", "INFRA_NOT_BLESSED"


def check_model(serving_model_dir: str, examples_uri: str = "",
                num_examples: int = 64) -> tuple[bool, str]:
    """(blessed, reason) of the SavedModel `serving_model_dir` under the C++ loader,
    on the first `num_examples` examples of the split directory `examples_uri` (none:
    the warmup requests' own examples)."""
    import tensorflow as tf

    from serving.cc_loader import CcLoaderError, NoCompilerError, check_export
    from serving.load_test import read_examples

    examples = []
    if examples_uri:
        for path in sorted(tf.io.gfile.glob(os.path.join(examples_uri, "*"))):
            examples += read_examples(path, limit=num_examples - len(examples))
            if len(examples) >= num_examples:
                break
    try:
        checked = check_export(serving_model_dir, examples)
    except NoCompilerError as e:
        return True, f"INFRA CHECK SKIPPED: {e}"
    except (CcLoaderError, ValueError) as e:
        return False, f"INFRA NOT BLESSED: {e}"
    except Exception as e:  # noqa: BLE001 - e.g. not a SavedModel: refused, not a crash
        return False, f"INFRA NOT BLESSED: {serving_model_dir}: {type(e).__name__}: {e}"
    signatures = ", ".join(sorted({c.signature for c in checked}))
    worst = max(c.max_abs_diff for c in checked)
    on = f"{len(examples)} examples" if examples else "the warmup requests' examples"
    return True, (f"INFRA BLESSED: loads and answers under TensorFlow's C++ loader, as "
                  f"in TF Serving: {len(checked)} calls ({signatures}) on {on}, max "
                  f"|C++ - local server| {worst:.2g}")


@component
def InfraCheck(  # noqa: N802 - TFX component names are classes by convention
    model: InputArtifact[standard_artifacts.Model],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    examples: InputArtifact[standard_artifacts.Examples] = None,
    num_examples: Parameter[int] = 64,
) -> None:
    """Blesses `model` iff its SavedModel loads and answers under TensorFlow's C++
    loader as the local server answers (`check_model`); says why in `reason`.

    Args:
      model: the candidate (the Trainer's `Model`; its `Format-Serving` SavedModel).
      blessing: the output the Pusher reads as `infra_blessing`.
      examples: the built examples; the first `num_examples` of the eval split are
        sent to every signature (absent: the warmup requests' examples).
    """
    examples_uri = ""
    if examples is not None:
        examples_uri = artifact_utils.get_split_uri([examples], EVAL)
    blessed, reason = check_model(path_utils.serving_model_path(model.uri),
                                  examples_uri, num_examples)
    blessing.set_int_custom_property(BLESSED_KEY, 1 if blessed else 0)
    blessing.set_string_custom_property(REASON_KEY, reason)
    os.makedirs(blessing.uri, exist_ok=True)
    with open(os.path.join(blessing.uri,
                           BLESSED_FILE if blessed else NOT_BLESSED_FILE), "w") as f:
        f.write(reason + "\n")
    print(f"InfraCheck: {reason}", flush=True)
