"""`daian serve`: the local TF Serving-compatible gRPC server, from the command line.

Registered with the library's CLI through the `daian_tf.commands` entry points
(setup.py).
"""

from __future__ import annotations

from daian_tf.core.signatures import DEFAULT_MODEL_NAME


def cmd_serve(args, _rest) -> int:
    from serving.server import serve

    serve(args.model_base_path, model_name=args.model_name, port=args.port,
          host=args.host, wait=True)
    return 0


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="TF Serving-compatible gRPC server (development)")
    p.add_argument("model_base_path")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 to accept remote clients")
    p.set_defaults(func=cmd_serve, beam_args=False)
