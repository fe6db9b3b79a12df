"""``moebius serve``: the HTTP API and the web editor (needs the ``serve`` extra).

Only the standard library is imported at module level; FastAPI, uvicorn and torch load when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import _options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``moebius`` command group."""
    parser = subparsers.add_parser(
        "serve", help="start the HTTP API and web editor",
        description="Serve Moebius over HTTP: the editor at /, the native API under /v1, IOPaint's /api/v1/inpaint "
                    "and OpenAPI docs at /docs. Binds 127.0.0.1 unless --host says otherwise.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    group = parser.add_argument_group("model")
    group.add_argument("--weights", metavar="DIR",
                       help="weights folder (official layout or one written by save_pretrained); default: the "
                            "official weights in $MOEBIUS_HOME or ~/.cache/moebius, else the bundled small model")
    group.add_argument("--variant", choices=_options.OFFICIAL_VARIANTS, help="official checkpoint variant")
    group.add_argument("--vae", metavar="DIR", help="VAE folder, if not <weights>/vae")
    group.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    group.add_argument("--dtype", default="float32", choices=_options.DTYPES,
                       help="network precision (float16 on CUDA/MPS only)")
    group.add_argument("--no-fast", action="store_true", help="run the reference U-Net instead of the fast path")
    _options.add_compile_option(group)
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", type=float, default=40.0, help="largest request body, MiB (40)")
    limits.add_argument("--max-megapixels", type=float, default=50.0, help="largest image, megapixels (50)")
    limits.add_argument("--max-megapixels-in-flight", type=float, metavar="MP",
                        help="decoded megapixels admitted at once, from decoding to the encoded answer; bounds "
                             "memory (default: --max-megapixels, one largest image at a time)")
    limits.add_argument("--max-batch", type=int, default=8, help="most same-size requests merged into one call (8)")
    limits.add_argument("--batch-wait-ms", type=float, default=10.0,
                        help="how long an idle queue waits for companions (10)")
    limits.add_argument("--max-queue", type=int, default=32, help="requests waiting before 503 Busy (32)")
    limits.add_argument("--timeout", type=float, default=300.0, help="per-request time limit, seconds (300)")
    limits.add_argument("--max-connections", type=int, default=64,
                        help="open connections served at once; more are answered 503 (64)")
    limits.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a client has to send a request's headers (10)")
    limits.add_argument("--body-timeout", type=float, default=120.0,
                        help="seconds a client has to send a request's body once its headers are in (120)")
    access = parser.add_argument_group("access")
    access.add_argument("--api-key", help="require this key (X-API-Key or Authorization: Bearer); "
                                          "default: $MOEBIUS_API_KEY, else none")
    access.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser calls from this origin (repeatable; CORS is off by default)")
    access.add_argument("--no-editor", action="store_true", help="serve the API only")
    access.add_argument("--ui", choices=("moebius", "iopaint"), default="moebius",
                        help="the web front-end at /: moebius (our editor, default) or iopaint (IOPaint 1.6.0's, from "
                             "an iopaint package installed beside: pip install --no-deps iopaint==1.6.0)")
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace):
    """Check the arguments (MoebiusError subclasses for a user's mistakes) -> ServeSettings."""
    import os

    from ..errors import ConfigError, InputError
    from ..pipeline.builder import check_dtype, resolve_device
    from ..weights.locations import holds_weights

    try:
        from ..serve.app import ServeSettings
    except ImportError as exc:
        raise ConfigError(f"moebius serve needs the serve extra: pip install 'moebius-inpaint[serve]' ({exc.name} missing)") \
            from None
    if not 0 < args.port < 65536:
        raise InputError(f"--port must lie in 1..65535, got {args.port}")
    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--max-megapixels", args.max_megapixels),
                        ("--max-batch", args.max_batch), ("--max-queue", args.max_queue), ("--timeout", args.timeout),
                        ("--max-connections", args.max_connections), ("--header-timeout", args.header_timeout),
                        ("--body-timeout", args.body_timeout)):
        if value <= 0:
            raise InputError(f"{flag} must be positive, got {value}")
    in_flight = args.max_megapixels if args.max_megapixels_in_flight is None else args.max_megapixels_in_flight
    if in_flight < args.max_megapixels:
        raise InputError(f"--max-megapixels-in-flight ({in_flight:g}) must be at least --max-megapixels "
                         f"({args.max_megapixels:g}), or the largest image accepted could never be admitted")
    if args.weights is not None and not Path(args.weights).expanduser().exists():
        raise InputError(f"--weights {args.weights}: no such folder")
    device = resolve_device(args.device)
    check_dtype(device, args.dtype)
    if args.ui == "iopaint" and not args.no_editor:
        from ..serve.iopaint_ui import iopaint_web_app

        iopaint_web_app()  # a missing package is a one-line error before any weights load
    weights = _options.choose_weights(args.weights)
    if args.weights is None and not holds_weights(Path(weights)):
        raise ConfigError(f"no model to serve: pass --weights DIR (a folder with the Moebius weights) or put the "
                          f"official weights in {weights} (moebius download); this installation bundles no model")
    return ServeSettings(
        weights=str(Path(weights).expanduser()), variant=args.variant, vae=args.vae,
        device=device, dtype=args.dtype, fast=not args.no_fast, compile=args.compile,
        max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
        max_pixels_in_flight=int(in_flight * 1e6),
        max_batch=args.max_batch, max_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
        request_timeout_s=args.timeout, max_connections=args.max_connections, header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout, api_key=args.api_key or os.environ.get("MOEBIUS_API_KEY") or None,
        cors_origins=tuple(args.cors_origin), editor=not args.no_editor, ui=args.ui)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from ..errors import ConfigError

    try:
        import uvicorn
    except ImportError:
        raise ConfigError("moebius serve needs uvicorn: pip install 'moebius-inpaint[serve]'") from None
    from ..serve.app import _load, create_app
    from ..serve.http_server import server_config

    pipeline = _load(settings)  # fail on bad weights before binding the port
    app = create_app(settings, pipeline=pipeline)
    host = f"[{args.host}]" if ":" in args.host else args.host
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(f"moebius serve: warning: listening on {args.host} without --api-key; anyone who can reach this "
              "machine can use the server", file=sys.stderr)
    if settings.ui == "iopaint" and settings.api_key:
        print("moebius serve: warning: IOPaint's front-end cannot send the API key, so its /api/v1 calls get 401; "
              "put a reverse proxy that adds the key in front (see the README's Server section)", file=sys.stderr)
    if settings.ui == "iopaint":
        from ..serve.iopaint_ui import IOPAINT_VERSION, iopaint_version

        if iopaint_version() != IOPAINT_VERSION:
            print(f"moebius serve: warning: the /api/v1 routes answer IOPaint {IOPAINT_VERSION}'s front-end; the "
                  f"installed iopaint is {iopaint_version()}", file=sys.stderr)
    front = "IOPaint's front-end" if settings.ui == "iopaint" else "editor"
    print(f"moebius serve: {front} at http://{host}:{args.port}/  API docs at http://{host}:{args.port}/docs")
    server = uvicorn.Server(server_config(app, settings, args.host, args.port, log_level="info"))
    server.run()
    return 0
