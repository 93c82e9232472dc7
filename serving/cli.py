"""`daian serve`: the local TF Serving-compatible gRPC server, from the command line.

Its flags are `tensorflow_model_server`'s, so a command line moves between the two:
`--model_base_path`/`--model_name` (one model) or `--model_config_file` (several,
with version policies and labels), `--file_system_poll_wait_seconds`,
`--enable_model_warmup`. Registered with the library's CLI through the
`daian_tf.commands` entry points (setup.py).
"""

from __future__ import annotations

from daian_tf.core.signatures import DEFAULT_MODEL_NAME


def cmd_serve(args, _rest) -> int:
    from serving.server import serve

    base_path = args.model_base_path or args.model_base_path_flag
    if bool(base_path) == bool(args.model_config_file):
        raise SystemExit("daian serve: error: give a model base path or "
                         "--model_config_file (not both)")
    serve(base_path or None, model_name=args.model_name, port=args.port,
          host=args.host, wait=True, model_config=args.model_config_file or None,
          poll_wait_s=args.file_system_poll_wait_seconds,
          enable_warmup=args.enable_model_warmup)
    return 0


def _flag_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(text)


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="TF Serving-compatible gRPC server (development)")
    p.add_argument("model_base_path", nargs="?", default="",
                   help="numeric version directories of one model (or use "
                        "--model_config_file)")
    p.add_argument("--model_base_path", dest="model_base_path_flag", default="",
                   help="the same, as tensorflow_model_server spells it")
    p.add_argument("--model_name", "--model-name", dest="model_name",
                   default=DEFAULT_MODEL_NAME)
    p.add_argument("--model_config_file", default="",
                   help="a TF Serving ModelServerConfig in text format "
                        "(serving/config/models.config.pbtxt)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="seconds between polls of the base paths for new versions; "
                        "0 loads at start only (default 1, as TF Serving)")
    p.add_argument("--enable_model_warmup", type=_flag_bool, default=True,
                   metavar="true|false",
                   help="replay assets.extra/tf_serving_warmup_requests before a "
                        "version is served (default true)")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 to accept remote clients")
    p.set_defaults(func=cmd_serve, beam_args=False)
