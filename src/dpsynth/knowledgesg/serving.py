"""Running the KnowledgeSG service in the foreground (``dpsynth server start``): uvicorn, signals, a clean stop."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn

from dpsynth.errors import ConfigError
from dpsynth.knowledgesg.server import RequestRecorder, Service, create_app
from dpsynth.knowledgesg.server_config import ServerConfig

log = logging.getLogger("dpsynth.server")


def serve(cfg: ServerConfig) -> None:
    """Run the server in the foreground until SIGINT (Ctrl-C) or SIGTERM, then stop cleanly.

    On the first signal uvicorn stops accepting requests and finishes the open ones, the job worker stops
    at its next safe point (the job goes back to the queue and continues on the next start), the models
    are closed, and this returns (exit status 0).  A second signal, or a worker still busy after
    ``shutdown_timeout_s``, ends the process at once with status 130, without interpreter teardown: that
    teardown, with a native thread still running, is what aborts a process; the journals are on disk.
    """
    from dpsynth.run_logging import setup_logging

    if not cfg.clients:
        raise ConfigError("clients: no client tokens configured; add one with `dpsynth server token CLIENT_ID`")
    try:
        loopback = ipaddress.ip_address(cfg.host).is_loopback
    except ValueError:
        loopback = cfg.host == "localhost"
    if not loopback and not (cfg.ssl_certfile and cfg.ssl_keyfile):
        log.warning(
            "listening on %s without TLS: bearer tokens cross the network in clear; set ssl_certfile/"
            "ssl_keyfile or put a TLS proxy in front",
            cfg.host,
        )
    state = Path(cfg.state_dir).expanduser()
    # the server's own files (client jobs, uploaded adapters, server.log with client names and paths) are
    # for its operator only, as the job folders inside are (0700): a folder it creates, and its log
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state / "server.log").touch(mode=0o600, exist_ok=True)
    setup_logging(state / "server.log", verbose=True)
    app = create_app(cfg, start_worker=False)  # _Uvicorn starts it once the port is bound
    service: Service = (app.app if isinstance(app, RequestRecorder) else app).state.service
    server = _Uvicorn(
        uvicorn.Config(
            app,
            host=cfg.host,
            port=cfg.port,
            log_level="warning",
            ssl_certfile=cfg.ssl_certfile,
            ssl_keyfile=cfg.ssl_keyfile,
            server_header=False,
            timeout_graceful_shutdown=10,  # open requests get this long once a stop was asked for
        ),
        service,
    )
    # Our handlers for the whole life of the server, not only while uvicorn's loop runs: a signal during
    # start-up or while waiting for the worker is handled too, and none is re-raised afterwards.
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in _STOP_SIGNALS}
    try:
        scheme = "https" if cfg.ssl_certfile else "http"
        log.info(
            "KnowledgeSG server on %s://%s:%d (state in %s; OpenAPI at /openapi.json)",
            scheme,
            cfg.host,
            cfg.port,
            state,
        )
        server.run()
    finally:
        # done already by the app's shutdown, unless uvicorn skipped it (second signal, failed start-up)
        clean = service.stop(cfg.shutdown_timeout_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not clean:
            log.warning(
                "the job worker did not reach a safe point; exiting without it (the job continues from its "
                "journal on the next start)"
            )
            logging.shutdown()  # flush server.log: os._exit skips the interpreter's own clean-up
            sys.stderr.flush()
            os._exit(130)
    log.info("server stopped (%s); queued and interrupted jobs continue on the next start", server.stop_reason)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Uvicorn(uvicorn.Server):
    """uvicorn with the life cycle ``serve`` needs.

    * The job worker starts only once the port is bound, so a failed start (port in use) never leaves a
      model loading in a thread while the process exits.
    * Signals: ``serve`` installs ``handle_exit`` for SIGINT and SIGTERM for the whole life of the server
      (uvicorn's own handlers would only cover its loop and re-raise the signal at the end, which kills
      the process on SIGTERM and raises KeyboardInterrupt on SIGINT).  The first signal asks for a clean
      stop, a second one stops waiting for the job worker.
    """

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self.stop_reason = "no signal"

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.service.start()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # serve() installed handle_exit already, and nothing is re-raised afterwards

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A second signal does not set uvicorn's force_exit: that skips the app's shutdown and leaves a
        # cancelled lifespan task (a traceback on stderr); open requests are bounded by
        # timeout_graceful_shutdown anyway, and only the wait for the job worker needs cutting short.
        if self.should_exit:
            self.service.force()
        else:
            self.stop_reason = signal.Signals(sig).name
        self.should_exit = True
