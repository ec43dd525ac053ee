"""The emulator process: the command line, moto's threaded werkzeug server with kiln's patches
applied and KilnApp in front, the one `KILN_EMULATOR_URL=http://HOST:PORT` line once it is
ready, and serving until SIGTERM/SIGINT."""

import argparse
import contextlib
import logging
import os
import signal
import sys

from .app import KilnApp


@contextlib.contextmanager
def _shared_boto3_session():
    """moto.ec2 creates three boto3 Sessions at import time just to list regions, and
    each one re-reads botocore's endpoint data (about 0.1 s each). While that import
    runs, let them share one botocore session: a third of the emulator's start-up."""
    import boto3
    import botocore.session

    shared, real_session = botocore.session.get_session(), boto3.Session

    def session(*args, **kwargs):
        kwargs.setdefault("botocore_session", shared)
        return real_session(*args, **kwargs)

    boto3.Session = session
    try:
        yield
    finally:
        boto3.Session = real_session


def patch_moto():
    """Imports moto's EC2 quickly, then applies the service modules' patches (once)."""
    with _shared_boto3_session():
        import moto.ec2.models  # noqa: F401
    from . import ec2

    ec2.patch()
    from . import ssm

    ssm.patch()
    from . import autoscaling

    autoscaling.patch()
    from . import elbv2

    elbv2.patch()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="kiln's local AWS emulator (moto + patches + faults)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055, help="0 picks a free port")
    parser.add_argument("--log-requests", action="store_true", help="log each HTTP request to stderr")
    return parser.parse_args(argv)


def make_server(host, port):
    """moto's server app behind KilnApp, bound to host:port (0: a free port)."""
    from werkzeug.serving import make_server as werkzeug_server

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    patch_moto()
    app = KilnApp(DomainDispatcherApplication(create_backend_app))
    return werkzeug_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.log_requests:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(args.host, args.port)
    port = server.socket.getsockname()[1]

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"KILN_EMULATOR_URL=http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        logging.shutdown()
        sys.stdout.flush()
        # Nothing is kept on disk; skip the interpreter's teardown of moto's large
        # in-memory state, which takes over a second.
        os._exit(0)
