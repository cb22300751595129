"""One logging format for every process of the platform."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    # One line per HTTP request of a client library is noise at INFO (the benchmarks poll the API).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
