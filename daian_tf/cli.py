"""The `daian` command line. Each subcommand parses its flags and calls the library.

    daian simulate OUT [--config C ...]           raw TIR logs of a simulated world
    daian build-samples RAW OUT [--config C ...] [beam args]
    daian train SAMPLES OUT [--config C ...]      transform + model.fit + export
    daian experiment [--config C ...] [--out D]  DIN vs DAIAN and ablations, report
    daian pipeline run|compile ...                the TFX pipeline (local or Kubeflow)
    daian serve MODEL_BASE_PATH [--port P]        local TF Serving-compatible gRPC server
    daian quickstart [--workdir W]                the README's main job
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "base.yaml"


def _config(paths: Optional[List[str]]):
    from daian_tf.training.config import load_config

    return load_config(*(paths or [DEFAULT_CONFIG]))


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append",
                   help="YAML config; repeat to layer overrides (later wins). "
                   f"Default: {DEFAULT_CONFIG}")


def cmd_simulate(args, _rest) -> int:
    from daian_tf.data.simulator import simulate

    cfg = _config(args.config).simulation
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    if args.scale is not None:
        cfg = cfg.scaled(args.scale)
    summary = simulate(args.out, cfg)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_build_samples(args, beam_args) -> int:
    from daian_tf.data.sample_builder import run_build_samples

    cfg = _config(args.config).samples
    report = run_build_samples(args.raw, args.out, cfg, beam_args=beam_args)
    print(json.dumps(report, indent=2))
    return 0


def cmd_train(args, beam_args) -> int:
    from daian_tf.training.trainer import train_from_samples

    cfg = _config(args.config)
    result = train_from_samples(args.samples, args.out, cfg, beam_args=beam_args,
                                raw_dir=args.raw)
    print(json.dumps(result, indent=2))
    return 0


def cmd_experiment(args, beam_args) -> int:
    from daian_tf.experiments.runner import run_experiment

    cfg = _config(args.config)
    results = run_experiment(cfg, args.out, raw_dir=args.raw, beam_args=beam_args)
    print(open(results["paths"]["report"]).read())
    print(f"report: {results['paths']['report']}")
    return 0


def cmd_pipeline(args, beam_args) -> int:
    from tfx_pipeline import runner

    cfg = _config(args.config)
    if args.action == "run":
        out = runner.run_local(args.raw, args.root, cfg, beam_args=beam_args)
    else:
        out = runner.compile_kubeflow(args.raw, args.root, cfg, args.output,
                                      image=args.image, beam_args=beam_args)
    print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_serve(args, _rest) -> int:
    from serving.server import serve

    serve(args.model_base_path, model_name=args.model_name, port=args.port,
          host=args.host, wait=True)
    return 0


def cmd_quickstart(args, beam_args) -> int:
    from tfx_pipeline.quickstart import run_quickstart

    run_quickstart(args.workdir, _config(args.config), scale=args.scale,
                   beam_args=beam_args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daian", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write raw TIR logs of a simulated world")
    p.add_argument("out")
    p.add_argument("--seed", type=int)
    p.add_argument("--scale", type=float,
                   help="multiply the number of users (10 gives about 1M impressions)")
    _add_config(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("build-samples",
                       help="raw logs → TFRecord samples with Beam; unknown flags go "
                       "to Beam (e.g. --runner, --direct_num_workers)")
    p.add_argument("raw")
    p.add_argument("out")
    _add_config(p)
    p.set_defaults(func=cmd_build_samples)

    p = sub.add_parser("train", help="Transform + model.fit + export on built samples")
    p.add_argument("samples")
    p.add_argument("out")
    p.add_argument("--raw", help="DAIAN: raw-log directory of the multimodal catalog "
                   "(default: the one the samples' report.json names)")
    _add_config(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("experiment",
                       help="DIN, DAIAN and ablations over seeds: tables and figures")
    p.add_argument("--out", default="runs/experiment")
    p.add_argument("--raw", help="raw-log directory (default: simulate the config's "
                   "world)")
    _add_config(p)
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("pipeline", help="the TFX pipeline")
    p.add_argument("action", choices=["run", "compile"])
    p.add_argument("raw", help="raw-log directory")
    p.add_argument("root", help="pipeline root (artifacts, metadata, serving dir)")
    p.add_argument("--output", default="daian_pipeline.json",
                   help="compile: the Kubeflow pipeline spec to write")
    p.add_argument("--image", default="gcr.io/tfx-oss-public/tfx:1.16.0",
                   help="compile: the container image of the components")
    _add_config(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("serve", help="TF Serving-compatible gRPC server (development)")
    p.add_argument("model_base_path")
    p.add_argument("--model-name", default="daian")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 to accept remote clients")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("quickstart", help="the README's main job, end to end")
    p.add_argument("--workdir", default="runs/quickstart")
    p.add_argument("--scale", type=float, default=1.0)
    _add_config(p)
    p.set_defaults(func=cmd_quickstart)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.command in ("simulate", "serve"):
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args, rest)
    except Exception as e:  # noqa: BLE001 - one clear line for known input errors
        from daian_tf.errors import DaianInputError

        if isinstance(e, DaianInputError):
            print(f"daian {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
