"""`pengi serve`: a model behind an OpenAI-compatible HTTP API, with dynamic batching and a web page (`pengi.serving`).

fastapi, uvicorn, prometheus-client and python-multipart are the ``serve`` extra (``pip install 'pengi[serve]'``);
they are imported only when the server starts, so the rest of the ``pengi`` command works without them.
SIGTERM (or Ctrl-C) stops accepting connections, finishes the requests in flight (up to ``--graceful-timeout``),
answers whatever is still queued, then exits with status 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal

from pengi.cli.common import (
    available_cores,
    non_negative_float,
    pick_device,
    positive_float,
    positive_int,
    runtime_options,
)

log = logging.getLogger("pengi")
EXTRA = ("fastapi", "uvicorn", "prometheus_client", "multipart")


def default_threads() -> int:
    """The model's torch threads when --threads is not given: the cores this process may use, less one for the
    server process (at least 1)."""
    return max(1, available_cores() - 1)


def port(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    runtime = runtime_options(
        threads_default="the cores this process may use, less one: one is left to the server process, which reads "
                        "requests and decodes audio; more threads than free cores make torch's workers spin",
        threads_aliases=("--torch-threads",))
    p = sub.add_parser("serve", parents=[runtime], description=__doc__.split("\n\n")[0],
                       help="serve a model over HTTP: OpenAI-compatible API, batching, a web page")
    p.add_argument("--model", default=None, help="Pengi or CLAP model folder (default: the model shipped with pengi)")
    p.add_argument("--served-model-name", default=None,
                   help="the name clients give as 'model' (default: the folder's name; pengi-default for the "
                        "shipped model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch-size", type=positive_int, default=32, help="clips per batched model call (default: 32)")
    g.add_argument("--max-wait-ms", type=non_negative_float, default=10.0,
                   help="longest a clip waits for others to join its batch (default: 10)")
    g.add_argument("--max-queue", type=positive_int, default=4096,
                   help="clips that may wait at once; beyond it requests get 503 (default: 4096)")
    g.add_argument("--decode-workers", type=positive_int, default=min(4, os.cpu_count() or 1),
                   help="threads decoding and resampling uploads (default: min(4, CPUs))")
    g.add_argument("--model-thread", action="store_true",
                   help="run the model on a thread of the server process instead of a process of its own: starts "
                        "faster, one copy of the libraries in memory, but the model and the request handling share "
                        "the GIL (for a server that gets one core, or for debugging)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-audio-mb", type=positive_float, default=25.0,
                   help="largest audio file, before decoding (default: 25, as vLLM)")
    g.add_argument("--max-audio-seconds", type=positive_float, default=600.0,
                   help="longest audio, checked on the decoded length (default: 600; windows mode reads it all)")
    g.add_argument("--max-request-mb", type=positive_float, default=None,
                   help="largest HTTP body (default: one --max-audio-mb file in base64 plus 1 MB)")
    g.add_argument("--allow-remote-audio", action="store_true",
                   help="let audio_url fetch http(s) URLs (default: only data: URLs and base64)")
    g.add_argument("--remote-audio-timeout", type=positive_float, default=10.0,
                   help="seconds to fetch a remote clip")
    g = p.add_argument_group("access")
    g.add_argument("--api-key", default=os.environ.get("PENGI_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $PENGI_API_KEY, else none)")
    g.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin browser requests from ORIGIN (repeatable; '*' for any)")
    g.add_argument("--graceful-timeout", type=non_negative_float, default=30.0,
                   help="seconds to finish requests in flight after SIGTERM (default: 30)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="(default: info; --quiet means warning, and no access log)")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace):
    """The `ServeSettings` the options describe."""
    from pengi.serving.settings import ServeSettings

    return ServeSettings(
        model=args.model, served_model_name=args.served_model_name, device=args.device, dtype=args.dtype,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_audio_mb=args.max_audio_mb, max_audio_seconds=args.max_audio_seconds,
        max_request_mb=args.max_request_mb, allow_remote_audio=args.allow_remote_audio,
        remote_audio_timeout=args.remote_audio_timeout, decode_workers=args.decode_workers,
        threads=args.threads or default_threads(), model_thread=args.model_thread, api_key=args.api_key,
        allow_origins=list(args.allow_origin), log_level="warning" if args.quiet else args.log_level)


def run(args: argparse.Namespace) -> int:
    if args.max_request_mb is not None and args.max_request_mb < args.max_audio_mb:
        log.error("--max-request-mb must be at least --max-audio-mb")
        return 2
    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        log.error("pengi serve needs %s: pip install 'pengi[serve]'", ", ".join(missing))
        return 2
    pick_device(args.device)  # an unusable --device is refused here (exit 2), before anything starts
    if args.model is not None and not os.path.isdir(args.model):
        log.error("%s: no such model folder", args.model)
        return 2
    import torch
    import uvicorn

    from pengi.serving.app import create_app

    settings = settings_from(args)
    # The model runs in its own process (with --threads); here torch only resamples uploads, one per decode
    # thread, so one intra-op thread each. With --model-thread the model shares this process and its setting.
    torch.set_num_threads(settings.threads if settings.model_thread else 1)
    level = settings.log_level
    logging.getLogger("pengi").setLevel(level.upper())
    server: uvicorn.Server | None = None

    def fatal(message: str) -> None:  # the model process died: stop serving, so that a supervisor restarts us
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=fatal)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=level, access_log=not args.quiet,
                            timeout_graceful_shutdown=args.graceful_timeout, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, restores the handlers it found, then raises the signal
    # again; with these no-op handlers in place the process exits with status 0 after a clean shutdown.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except SystemExit:  # uvicorn's way out when the lifespan fails (e.g. a model that cannot be loaded)
        return 1
    except (OSError, ValueError) as err:  # e.g. the port is taken
        log.error("%s", err)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if app.state.server.fatal:
        log.error("%s", app.state.server.fatal)
        return 1
    return 0 if server.started else 1
