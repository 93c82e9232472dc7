"""Select on validation, report on eval: no fit reads the eval split, and the same
config, seed and raw logs give the same numbers.

- `daian train` (`workflows.train_from_samples`) on samples whose eval labels are
  flipped fits exactly as on the original samples (same history, same weights: the
  same scores on validation), while its eval metrics move: the eval split is scored,
  never chosen by.
- `daian experiment` (`experiments.runner.run_experiment`) twice on the same raw logs
  gives identical runs (metrics and every epoch's validation metric), and its fits are
  handed the validation split, never the eval split.
- The TFX Trainer's `run_fn` refuses eval files that reach into the eval split.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.config import Config, SimulationConfig
from daian_tf.core.names import DAIAN, DIN, EVAL, TRAIN, VALIDATION
from daian_tf.core.signatures import INPUT_EXAMPLES, OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT
from daian_tf.data.simulator import simulate
from tests.integration.test_transform_train_export import _cfg, write_random_samples

pytestmark = pytest.mark.slow

TIMING_KEYS = ("train_seconds", "samples_per_second")


def _flip_labels(split_dir: Path) -> None:
    """Rewrite every file of a split with each example's click label flipped."""
    for path in sorted(split_dir.glob("data-*.tfrecord.gz")):
        flipped = []
        for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            label = example.features.feature[F.LABEL].int64_list.value
            label[0] = 1 - label[0]
            flipped.append(example.SerializeToString())
        with tf.io.TFRecordWriter(str(path), options="GZIP") as w:
            for record in flipped:
                w.write(record)


def test_daian_train_chooses_its_epoch_by_validation_never_by_eval(tmp_path):
    from daian_tf.workflows import train_from_samples

    base = _cfg()
    cfg = dataclasses.replace(base, train=dataclasses.replace(
        base.train, epochs=4, restore_best_epoch=True))
    write_random_samples(tmp_path / "a", cfg, seed=3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _flip_labels(tmp_path / "b" / EVAL)

    runs = {k: train_from_samples(str(tmp_path / k), str(tmp_path / f"out_{k}"), cfg)
            for k in ("a", "b")}
    a, b = runs["a"], runs["b"]
    # the fit: every epoch's validation metrics, the validation scores of the model
    assert a["history"] == b["history"]
    assert "val_auc" in a["history"] and len(a["history"]["val_auc"]) == 4
    assert a[VALIDATION] == b[VALIDATION]
    scores = []
    for k in ("a", "b"):
        model = tf.saved_model.load(runs[k]["serving_model_dir"])
        raw = [r.numpy() for path in sorted((tmp_path / k / VALIDATION).glob("*.gz"))
               for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]
        scores.append(model.signatures[SIGNATURE_SERVING_DEFAULT](
            **{INPUT_EXAMPLES: tf.constant(raw)})[OUTPUT_CTR].numpy())
    np.testing.assert_array_equal(scores[0], scores[1])
    # the report: the eval split was read, with its flipped labels
    assert a[EVAL]["auc"] == pytest.approx(1.0 - b[EVAL]["auc"], abs=1e-6)
    assert a[EVAL]["auc"] != pytest.approx(b[EVAL]["auc"], abs=1e-3)


def _experiment_cfg() -> Config:
    base = Config()
    return dataclasses.replace(
        base,
        simulation=SimulationConfig(num_users=80, num_items=320, num_categories=16,
                                    num_shops=20, request_days=5, history_days=3),
        samples=dataclasses.replace(base.samples, history_days=3, max_seq_len=8),
        model=dataclasses.replace(base.model, embedding_dim=4, hidden_units=(16, 8),
                                  attention_units=(8,), uim_hidden_units=(8,),
                                  intent_dim=8, attention_heads=2, attention_width=8,
                                  projection_units=(8,), gate_hidden_units=(8,)),
        train=dataclasses.replace(base.train, batch_size=128, epochs=2,
                                  stage1_epochs=1, stage2_epochs=2, stage3_epochs=1),
        experiment=dataclasses.replace(base.experiment, seeds=(0,),
                                       variants=(DIN, DAIAN)))


@pytest.fixture(scope="module")
def experiments(tmp_path_factory, monkeypatch_module):
    """Two `daian experiment` runs on one simulated world; the patterns each fit was
    handed."""
    from daian_tf.experiments import runner

    root = tmp_path_factory.mktemp("honest")
    cfg = _experiment_cfg()
    simulate(str(root / "raw"), cfg.simulation)
    handed = []
    fit = runner.fit_model

    def spy(run_cfg, tfo, train_pattern, validation_pattern, **kwargs):
        handed.append((train_pattern, validation_pattern))
        return fit(run_cfg, tfo, train_pattern, validation_pattern, **kwargs)

    monkeypatch_module.setattr(runner, "fit_model", spy)
    results = [runner.run_experiment(cfg, str(root / f"run{k}"), str(root / "raw"),
                                     progress=False) for k in (0, 1)]
    return {"results": results, "handed": handed}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_same_experiment_gives_the_same_table(experiments):
    first, second = experiments["results"]

    def numbers(results):
        return [{k: v for k, v in run.items() if k not in TIMING_KEYS}
                for run in results["runs"]]

    assert len(first["runs"]) == 2
    assert numbers(first) == numbers(second)
    assert first["reference_rows"] == second["reference_rows"]
    # every table of report.md but the throughput's (wall time)
    tables = []
    for results in (first, second):
        text = Path(results["paths"]["report"]).read_text()
        text = text.split("## Training throughput")[0]
        tables.append([line for line in text.splitlines() if line.startswith("|")])
    assert tables[0] and tables[0] == tables[1]


def test_every_experiment_fit_is_handed_train_and_validation_only(experiments):
    handed = experiments["handed"]
    assert len(handed) == 4  # two variants, two runs
    for train_pattern, validation_pattern in handed:
        assert f"/{TRAIN}/" in train_pattern
        assert f"/{VALIDATION}/" in validation_pattern
        assert f"/{EVAL}/" not in train_pattern + validation_pattern
    dataset = experiments["results"][0]["dataset"]
    assert dataset["validation_samples"] > 0 and dataset["eval_samples"] > 0


def test_the_trainer_refuses_eval_files_from_the_eval_split():
    from tfx.components.trainer.fn_args_utils import FnArgs

    from tfx_pipeline.trainer_module import _validation_files

    ok = FnArgs(eval_files=["/x/Transform/transformed_examples/7/Split-validation/*"])
    assert _validation_files(ok) == ok.eval_files
    for bad in (["/x/Transform/transformed_examples/7/Split-eval/*"],
                "/x/transformed_examples/7/Split-eval/*"):
        with pytest.raises(ValueError, match="held-out 'eval' split"):
            _validation_files(FnArgs(eval_files=bad))
