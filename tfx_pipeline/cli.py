"""The pipeline's `daian` commands: `daian pipeline run|compile` and `daian quickstart`.

Registered with the library's CLI through the `daian_tf.commands` entry points
(setup.py); the TFX imports happen when a command runs, not when the CLI starts.
"""

from __future__ import annotations

import json

from daian_tf.cli import add_config_option, load_cli_config


def cmd_pipeline(args, beam_args) -> int:
    from tfx_pipeline import runner

    cfg = load_cli_config(list(args.configs) + list(args.config or []))
    if args.action == "run":
        out = runner.run_local(args.raw, args.root, cfg, beam_args=beam_args)
        print(json.dumps(out, indent=2, default=str))
        print(out["reason"])
        print(f"pushed: {out['pushed_model']}" if out["pushed"] else
              f"nothing pushed; {out['serving_dir']} is as it was")
    else:
        out = runner.compile_kubeflow(args.raw, args.root, cfg, args.output,
                                      image=args.image, beam_args=beam_args)
        print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_quickstart(args, beam_args) -> int:
    from tfx_pipeline.quickstart import run_quickstart

    run_quickstart(args.workdir, load_cli_config(args.config), scale=args.scale,
                   beam_args=beam_args)
    return 0


def add_pipeline_command(sub) -> None:
    p = sub.add_parser(
        "pipeline", help="the TFX pipeline (run: locally; compile: for Kubeflow); "
        "unknown flags go to Beam")
    p.add_argument("action", choices=["run", "compile"])
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="YAML configs layered over the packaged default (later wins): "
                   "the pipeline: section names the raw logs, the root, the serving "
                   "directory, Beam options, the gate; see configs/pipeline.yaml")
    p.add_argument("--raw", help="raw-log directory (default: pipeline.raw_dir)")
    p.add_argument("--root", help="pipeline root: artifacts, ML Metadata, schema "
                   "(default: pipeline.root)")
    p.add_argument("--output", default="daian_pipeline.json",
                   help="compile: the Kubeflow pipeline spec to write")
    p.add_argument("--image", default=None,
                   help="compile: the image every task runs, built from the Dockerfile "
                   "(default: pipeline.image, daian-tf-pipeline:<version>); {image} in a "
                   "Beam option stands for it")
    add_config_option(p)
    p.set_defaults(func=cmd_pipeline, beam_args=True)


def add_quickstart_command(sub) -> None:
    p = sub.add_parser("quickstart", help="the README's main job, end to end")
    p.add_argument("--workdir", default="runs/quickstart")
    p.add_argument("--scale", type=float, default=1.0)
    add_config_option(p)
    p.set_defaults(func=cmd_quickstart, beam_args=True)
