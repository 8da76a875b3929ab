"""``mrl serve``: load the model once (as ``mrl detect`` loads it), then serve the page and the API with uvicorn.

    mrl serve [--host 127.0.0.1] [--port 8000] [--encoder models/encoder.pt --relation models/relation.pt]
              [--mlflow-run RUN_ID | --mlflow-model URI --trust-pickle] [--max-upload-mb 200] [--queue 4]

Bound to 127.0.0.1 unless ``--host`` says otherwise (a warning then: anyone who can reach the address can
upload videos and read the results).
"""
from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

import uvicorn

from pipeline.model_options import PROJECT_DEFAULTS, project_defaults
from pipeline.scoring.detect import open_model_or_explain
from pipeline.serving.app import ServeOptions, create_app
from pipeline.serving.card import model_card

__all__ = ["is_loopback", "run"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def run(args: argparse.Namespace) -> int:
    for flag, low in (("port", 1), ("max_upload_mb", 1e-6), ("queue", 1), ("heatmap_windows", 0), ("keep", 1),
                      ("batch_size", 1), ("stride", 1), ("max_windows", 1), ("max_frames", 1)):
        v = getattr(args, flag)
        if v is not None and v < low:
            print(f"serve: --{flag.replace('_', '-')} must be >= {low:g}", file=sys.stderr)
            return 2
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print("serve: --threshold must be in [0, 1]", file=sys.stderr)
        return 2
    loopback = is_loopback(args.host)
    if not loopback:
        print(f"serve: warning: listening on {args.host}, not on this machine only: anyone who can reach it can "
              f"upload videos and read every result; use --host 127.0.0.1 unless you mean it", file=sys.stderr)
    project_defaults(args, "serve", {**PROJECT_DEFAULTS, "metrics": "metrics/evaluate.json", "lock": "dvc.lock"})
    opened = open_model_or_explain(args, "serve")
    if opened is None:
        return 2
    device, model = opened
    card = model_card(model, args.metrics, args.lock, args.tracking_uri)
    opts = ServeOptions(args.max_upload_mb, args.queue, args.keep, args.heatmap_windows, args.threshold,
                        args.stride, args.max_windows, args.max_frames, args.batch_size,
                        # requests naming another host are refused (DNS rebinding); Starlette's check cannot
                        # parse IPv6 Host headers, so it is left out for an IPv6 address
                        allowed_hosts=["127.0.0.1", "localhost", args.host] if loopback and ":" not in args.host
                        else None)
    app = create_app(model, device, card, opts)
    auc = card["test_auc"]
    said = (f"test AUC {auc:.3f}" + (f" [{card['auc_ci'][0]:.3f}, {card['auc_ci'][1]:.3f}]" if card["auc_ci"] else "")
            if auc is not None else card["note"])
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serve: {card['name']}; {said}", file=sys.stderr)
    print(f"serve: open http://{shown}:{args.port}/ (API docs at /docs); Ctrl-C stops", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
