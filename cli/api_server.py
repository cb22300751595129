"""The HTTP API (uvicorn) run from a thread of the platform process, beside the ingest supervisor."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from api.app import create_app
from runtime.settings import Settings


class ApiServerError(RuntimeError):
    pass


class ApiServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = uvicorn.Config(create_app(settings, service_loop=True), host=settings.api_host, port=settings.api_port,
                                log_level=settings.log_level.lower(), access_log=False, lifespan="on",
                                # Open dashboards hold event streams; stopping must not wait for them.
                                timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start(self, timeout: float = 15.0) -> None:
        with socket.socket() as probe:
            if probe.connect_ex((self.settings.api_host, self.settings.api_port)) == 0:
                raise ApiServerError(f"port {self.settings.api_port} on {self.settings.api_host} is already in use; "
                                     "stop what runs there or set CARGOTRACE_API_PORT")
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ApiServerError(f"the API did not start on {self.url} (see the log above)")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
