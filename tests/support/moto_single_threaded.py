#!/usr/bin/env python3
"""moto's server, answering one request at a time: `moto_single_threaded.py PORT`.

moto's own server (`python -m moto.server`) is threaded, and its S3 backend
checks a conditional write (If-Match, If-None-Match) and then writes without a
lock, so two concurrent conditional writes of one key can both succeed. Real S3
does not allow that. Tests of concurrent conditional updates run against this
server instead, where the check and the write of one request can no longer
interleave with another request's.
"""
import os
import sys

from moto.moto_server.threaded_moto_server import (  # noqa: F401 (moto's layout)
    DomainDispatcherApplication,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main():
    port = int(sys.argv[1])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    try:
        from moto.server import MotoRequestHandler  # as moto's own main uses
        extra = {"request_handler": MotoRequestHandler}
    except ImportError:
        extra = {}
    run_simple("127.0.0.1", port, app, threaded=False, use_reloader=False, **extra)


if __name__ == "__main__":
    main()
