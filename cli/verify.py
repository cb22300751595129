"""``cargotrace verify replay --streams N --seed S``: the replay oracle for long runs.

It never touches the configured stack's data: it starts its own Mosquitto from the project's
``mosquitto.conf`` (a temporary state directory, a free port), its own database (the configured
server, database ``<configured name>_verify``, dropped and re-created, migrated), the API on a free
port and the ingest supervisor with ``--workers`` worker processes, exactly as ``cargotrace run``
does. Stream ``i`` uses seed ``S + i``: each is generated, delivered with chaos (random order,
duplicates, split and merged arrays) and its stored state compared with ``core.replay``.

Prints the first difference and exits 1 as soon as one stream differs; exits 0 when all agree.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cli.local_broker import start_local_broker, stop_local_broker
from devices.broker_accounts import BrokerAccounts
from ingest.db import connect, migrate
from ingest.db_roles import drop_service_roles
from runtime.settings import Settings, load_settings

if TYPE_CHECKING:  # the stack (API, workers, core.replay) is imported only when the command runs
    from simulators.oracle_stack import OracleStack

console = Console(stderr=True)
verify_app = typer.Typer(help="Prove the platform's promises against independent derivations.", no_args_is_help=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def verify_database_url(url: str) -> str:
    name = str(conninfo_to_dict(url).get("dbname") or "cargotrace")
    return make_conninfo(url, dbname=f"{name}_verify")


def _recreate(url: str) -> None:
    name = str(conninfo_to_dict(url)["dbname"])
    with connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    drop_service_roles(url)  # a private database: an earlier run's roles (passwords gone with it) go too
    migrate(url)


@contextmanager
def private_stack(base: Settings, workers: int) -> Iterator[OracleStack]:
    """Own broker, own database, own API and workers; all stopped (the database kept) on exit."""
    from simulators.oracle_stack import OracleStack

    with tempfile.TemporaryDirectory(prefix="cargotrace-verify-") as state:
        group = f"verify{_free_port()}"
        settings = load_settings(create_secrets=True, state_dir=Path(state), mqtt_host="127.0.0.1",
                                 mqtt_port=_free_port(), database_url=verify_database_url(base.database_url),
                                 api_host="127.0.0.1", api_port=_free_port(), ingest_group=group,
                                 ingest_client_prefix=f"ingest-{group}", ingest_batch_wait_ms=20,
                                 rfid_sweep_interval_s=0.5, log_level="WARNING")
        _recreate(settings.database_url)
        start_local_broker(settings)
        try:
            with BrokerAccounts(settings) as accounts:
                accounts.ensure_service_accounts()
            with OracleStack(settings, workers) as stack:
                yield stack
        finally:
            stop_local_broker(settings)


@verify_app.command("replay")
def verify_replay(
    streams: Annotated[int, typer.Option(min=1, help="how many streams (seeds S, S+1, ...)")] = 10,
    seed: Annotated[int, typer.Option(help="seed of the first stream")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="ingest worker processes")] = 2,
) -> None:
    """Deliver seeded streams with chaos to a private stack and compare the stored state with
    core.replay of the same messages; exit 1 at the first difference."""
    base = load_settings()
    with private_stack(base, workers) as stack, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console) as progress:
        overall = progress.add_task("streams", total=streams)
        for i in range(streams):
            current = progress.add_task(f"  seed {seed + i}: publishing", total=None)

            def report(stage: str, done: int, total: int, task: TaskID = current, s: int = seed + i) -> None:
                progress.update(task, description=f"  seed {s}: {stage}", completed=done, total=total)

            outcome = stack.run_stream(seed + i, on_progress=report)
            progress.update(current, description=f"  seed {seed + i}: {outcome.delivered} messages, "
                                                 f"{'differs' if outcome.difference else 'equal'}")
            progress.advance(overall)
            if outcome.difference is not None:
                progress.stop()
                console.print(f"[red]seed {seed + i} (stream {outcome.stream.tag}): stored state differs from "
                              "the replay[/red]")
                # Plain text, unwrapped: the difference holds brackets (not markup) and is grepped.
                console.print(outcome.difference, markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(1)
    console.print(f"[green]{streams} stream(s) from seed {seed}: the stored state equals the replay[/green]")
