"""`daian serve`, `daian score`, `daian load-test` and `daian check-export`: the local
TF Serving-compatible gRPC server, a client of any TF Serving endpoint, the load test,
and an export run under TensorFlow's C++ loader, from the command line.

`daian serve` takes `tensorflow_model_server`'s flags, so a command line moves between
the two: `--model_base_path`/`--model_name` (one model) or `--model_config_file`
(several, with version policies and labels), `--file_system_poll_wait_seconds`,
`--enable_model_warmup`, `--enable_batching`/`--batching_parameters_file`,
`--rest_api_port`, `--monitoring_config_file`.
`daian score` sends the serialized examples of a TFRecord file to a server and prints
one JSON line per example. `daian load-test` runs `serving.load_test` (its docstring
says what it measures) with the `daian` command's quiet console. Registered with the
library's CLI through the `daian_tf.commands` entry points (setup.py).
"""

from __future__ import annotations

import os

from daian_tf.core.errors import DaianInputError
from daian_tf.core.signatures import DEFAULT_MODEL_NAME
from serving.contract import REST_API_TIMEOUT_MS


def cmd_serve(args, _rest) -> int:
    from serving.server import serve, set_tensorflow_threads

    base_path = args.model_base_path or args.model_base_path_flag
    if bool(base_path) == bool(args.model_config_file):
        raise DaianInputError("give a model base path or --model_config_file (not "
                              "both)")
    if args.batching_parameters_file and not args.enable_batching:
        raise DaianInputError("--batching_parameters_file needs "
                              "--enable_batching=true (as tensorflow_model_server)")
    if args.model_config_file_poll_wait_seconds and not args.model_config_file:
        raise DaianInputError("--model_config_file_poll_wait_seconds needs "
                              "--model_config_file")
    if args.model_config_file_poll_wait_seconds < 0:
        raise DaianInputError("--model_config_file_poll_wait_seconds must be >= 0, "
                              f"got {args.model_config_file_poll_wait_seconds}")
    for flag in ("num_load_threads", "num_unload_threads"):
        if getattr(args, flag) not in (0, 1):
            raise DaianInputError(
                f"--{flag}={getattr(args, flag)}: this server loads and unloads one "
                "version at a time, in its poll thread beside the requests (what 1 "
                "does in TF Serving); give 0 or 1")
    if args.grpc_max_threads is not None and args.grpc_max_threads < 1:
        raise DaianInputError(f"--grpc_max_threads must be >= 1, got "
                              f"{args.grpc_max_threads}")
    batching = None
    if args.enable_batching:
        from serving.batching import BatchingParameters

        batching = args.batching_parameters_file or BatchingParameters()
    try:
        set_tensorflow_threads(args.tensorflow_intra_op_parallelism,
                               args.tensorflow_inter_op_parallelism,
                               args.tensorflow_session_parallelism)
        serve(base_path or None, model_name=args.model_name, port=args.port,
              host=args.host, wait=True, model_config=args.model_config_file or None,
              poll_wait_s=args.file_system_poll_wait_seconds,
              enable_warmup=args.enable_model_warmup, batching=batching,
              rest_api_port=args.rest_api_port or None,
              monitoring=args.monitoring_config_file or None,
              max_workers=args.grpc_max_threads,
              grpc_channel_arguments=args.grpc_channel_arguments,
              model_config_poll_wait_s=args.model_config_file_poll_wait_seconds,
              grpc_socket_path=args.grpc_socket_path,
              rest_api_timeout_s=args.rest_api_timeout_in_ms / 1000)
    except (OSError, RuntimeError, ValueError) as e:
        # a missing model or file, no servable version, a refused config, a port in
        # use: one line naming it (the `daian` command prints DaianInputError so)
        raise DaianInputError(str(e)) from e
    return 0


def cmd_score(args, _rest) -> int:
    import json

    import grpc

    from serving.client import PredictClient
    from serving.load_test import read_examples

    if not os.path.isfile(args.examples):
        raise DaianInputError(f"no such examples file: {args.examples}")
    examples = read_examples(args.examples, limit=args.limit)
    if not examples:
        raise SystemExit(f"daian score: error: no examples in {args.examples}")
    with PredictClient(args.target, model_name=args.model_name,
                       timeout_s=args.timeout_s, retries=args.retries) as client:
        for start in range(0, len(examples), args.batch_size):
            batch = examples[start:start + args.batch_size]
            try:
                scores = client.predict_examples(batch, args.signature, args.output)
            except grpc.RpcError as e:
                raise SystemExit(f"daian score: error: {args.target} answered "
                                 f"{e.code().name}: {e.details()} (examples "
                                 f"{start}-{start + len(batch) - 1})")
            for i, value in enumerate(scores.tolist()):
                print(json.dumps({"index": start + i, args.output: value}))
    return 0


def cmd_check_export(args, _rest) -> int:
    from serving.cc_loader import CcLoaderError, check_export, version_dir
    from serving.load_test import read_examples

    try:
        export_dir = version_dir(args.export_dir)
    except ValueError as e:
        raise DaianInputError(str(e)) from e
    examples = []
    if args.examples:
        if not os.path.isfile(args.examples):
            raise DaianInputError(f"no such examples file: {args.examples}")
        examples = read_examples(args.examples, limit=args.limit)
        if not examples:
            raise DaianInputError(f"no examples in {args.examples}")
    print(f"checking {export_dir} under TensorFlow's C++ SavedModel loader "
          "(LoadSavedModel + Session::Run, as tensorflow_model_server)", flush=True)
    try:
        checked = check_export(export_dir, examples)
    except (CcLoaderError, ValueError) as e:
        raise SystemExit(f"daian check-export: FAILED: {e}")
    for call in checked:
        print(f"  {call.source:<18} {call.signature:<22} {call.rows:>5} rows  "
              f"max |C++ - served| {call.max_abs_diff:.2g}")
    print(f"OK: {len(checked)} calls answered as the local server answers them")
    return 0


def add_check_export_command(sub) -> None:
    p = sub.add_parser(
        "check-export", help="run a SavedModel's signatures under TensorFlow's C++ "
        "loader, as TF Serving does, and compare with the local server",
        description="Loads EXPORT_DIR (a version directory, or a base path: its "
        "highest version) with tensorflow::LoadSavedModel, replays its warmup "
        "requests and runs every signature on --examples (default: the warmup "
        "requests' examples), each compared with the local server's answer. Builds "
        "a small C++ runner on first use (needs g++, or $CXX).")
    p.add_argument("export_dir")
    p.add_argument("--examples", help="TFRecord file of serialized tf.Examples "
                   "(.gz: GZIP)")
    p.add_argument("--limit", type=int, default=64, help="examples read at most")
    p.set_defaults(func=cmd_check_export, beam_args=False)


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
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                   help="re-read --model_config_file this often and serve it when it "
                        "changed (default 0: never, as TF Serving)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="seconds between polls of the base paths for new versions; "
                        "0 loads at start only (default 1, as TF Serving)")
    for flag in ("num_load_threads", "num_unload_threads"):
        p.add_argument(f"--{flag}", type=int, default=0,
                       help="0 or 1: versions load (unload) one at a time beside the "
                            "requests either way")
    p.add_argument("--enable_model_warmup", type=_flag_bool, default=True,
                   metavar="true|false",
                   help="replay assets.extra/tf_serving_warmup_requests before a "
                        "version is served (default true)")
    p.add_argument("--enable_batching", type=_flag_bool, default=False,
                   metavar="true|false",
                   help="batch concurrent requests of a signature (default false)")
    p.add_argument("--batching_parameters_file", default="",
                   help="a TF Serving BatchingParameters in text format "
                        "(serving/config/batching_parameters.pbtxt)")
    p.add_argument("--monitoring_config_file", default="",
                   help="a TF Serving MonitoringConfig in text format "
                        "(serving/config/monitoring.config.pbtxt): Prometheus metrics "
                        "on the REST port")
    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument("--grpc_channel_arguments", default="",
                   help="gRPC server arguments, key=value,key=value (integers passed "
                        "as integers), as tensorflow_model_server; messages are taken "
                        "and sent up to 2 GiB unless they say otherwise")
    p.add_argument("--grpc_socket_path", default="",
                   help="also serve gRPC on this UNIX socket (clients dial "
                        "unix:PATH)")
    p.add_argument("--grpc_max_threads", type=int, default=None,
                   help="request threads (default 4, 64 with batching)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads of one op (0: TensorFlow's default, the cores)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="ops run at once (0: TensorFlow's default)")
    p.add_argument("--tensorflow_session_parallelism", type=int, default=0,
                   help="both of the above, when neither is given")
    p.add_argument("--rest_api_port", type=int, default=0,
                   help="also serve TF Serving's REST API on this port (0: off, "
                        "as tensorflow_model_server)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=REST_API_TIMEOUT_MS,
                   help="a REST predict request's deadline (default "
                        f"{REST_API_TIMEOUT_MS}, as tensorflow_model_server)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 to accept remote clients")
    p.set_defaults(func=cmd_serve, beam_args=False)


def add_score_command(sub) -> None:
    from daian_tf.core.signatures import OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT

    p = sub.add_parser("score", help="score the examples of a TFRecord file on a "
                       "TF Serving endpoint (gRPC)")
    p.add_argument("target", help="host:port of the gRPC endpoint")
    p.add_argument("examples", help="TFRecord file of serialized tf.Examples "
                   "(.gz: GZIP)")
    p.add_argument("--model_name", "--model-name", dest="model_name",
                   default=DEFAULT_MODEL_NAME)
    p.add_argument("--signature", default=SIGNATURE_SERVING_DEFAULT)
    p.add_argument("--output", default=OUTPUT_CTR, help="output to print")
    p.add_argument("--batch_size", type=int, default=64,
                   help="examples per request")
    p.add_argument("--limit", type=int, default=100_000, help="examples read at most")
    p.add_argument("--timeout_s", type=float, default=5.0,
                   help="deadline of each request, retries included")
    p.add_argument("--retries", type=int, default=3,
                   help="retries of a request answered UNAVAILABLE")
    p.set_defaults(func=cmd_score, beam_args=False)


def add_load_test_arguments(p) -> None:
    """The flags of `daian load-test` and `python -m serving.load_test` (here, where
    building the parser imports no TensorFlow)."""
    p.add_argument("target", nargs="?", help="host:port of a loopback gRPC "
                   "endpoint (without --model-dir)")
    p.add_argument("examples_file", nargs="?", metavar="examples",
                   help="TFRecord file of serialized tf.Examples (.gz: GZIP)")
    p.add_argument("--model-dir", help="benchmark the versions under this base path "
                   "on local servers started here")
    p.add_argument("--examples", help="with --model-dir: the examples")
    p.add_argument("--candidates", type=int, nargs="+", default=[50, 200, 500])
    p.add_argument("--batching-parameters-file", default="",
                   help="with --model-dir: also run with batching on")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--json", help="with --model-dir: write the rows here too")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--num-requests", type=int, default=200)
    p.add_argument("--duration-s", type=float, default=60.0,
                   help="stop each run after this many seconds")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--timeout-s", type=float, default=5.0)


def cmd_load_test(args, _rest) -> int:
    from serving.load_test import run_from_args

    return run_from_args(args)


def add_load_test_command(sub) -> None:
    p = sub.add_parser(
        "load-test", help="load a loopback TF Serving endpoint (QPS, latency "
        "percentiles), or benchmark rank against serving_default on an export",
        description="`daian load-test TARGET EXAMPLES`: serving_default requests from "
        "--concurrency threads until --num-requests or --duration-s; JSON summary. "
        "`daian load-test --model-dir BASE --examples EXAMPLES`: local servers, rank "
        "at --candidates against serving_default on the same pairs, FLOPs and the "
        "machine's matmul GFLOP/s; a table. Loopback targets only.")
    add_load_test_arguments(p)
    p.set_defaults(func=cmd_load_test, beam_args=False)
