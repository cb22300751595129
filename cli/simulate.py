"""``cargotrace simulate --scenario NAME``: simulated devices against a running platform.

The lead registers it with ``app.add_typer(simulate_app, name="simulate")``. The sub-app's
callback is the command itself (``invoke_without_command``), so options follow ``simulate``
directly. The API URL, broker and topic prefix default to the local stack's settings; without
``--token`` an admin token is created in the database (as ``cargotrace token create`` would).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)

simulate_app = typer.Typer(help="Simulated scanners, RFID gates, trackers and sensors publishing a scenario.",
                           invoke_without_command=True, no_args_is_help=False)


@simulate_app.callback(invoke_without_command=True)
def simulate(
    scenario: Annotated[str | None, typer.Option(help="normal-day, cold-chain-excursion, late-delivery, "
                                                      "offline-tracker, bad-devices or load")] = None,
    seed: Annotated[int, typer.Option(help="the same seed gives the same messages")] = 1,
    duration: Annotated[float, typer.Option(help="wall seconds the run lasts")] = 300.0,
    speedup: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 60.0,
    devices: Annotated[int | None, typer.Option(help="load: devices; normal-day: trucks")] = None,
    rate: Annotated[float | None, typer.Option(help="load: total messages per second")] = None,
    online: Annotated[bool, typer.Option("--online", help="offline-tracker: keep the tracker online "
                                                          "(the baseline)")] = False,
    run_id: Annotated[str | None, typer.Option(help="tag for per-run codes (default: from the clock)")] = None,
    api_url: Annotated[str | None, typer.Option(help="default: the local API from the settings")] = None,
    token: Annotated[str | None, typer.Option(envvar="CARGOTRACE_ADMIN_TOKEN", help="admin API token")] = None,
    list_: Annotated[bool, typer.Option("--list", help="describe the scenarios and exit")] = False,
) -> None:
    """Provision a scenario's world through the API, then play it over MQTT with one connection per device.

    Simulated time runs in the past: the window of duration x speedup simulated seconds ends when
    the run starts, so no timestamp is ever ahead of the wall clock.
    """
    from simulators.provision import ApiError
    from simulators.runner import RunnerError
    from simulators.scenarios import SCENARIOS, run_scenario

    if list_ or scenario is None:
        for name, (_, doc) in SCENARIOS.items():
            console.print(f"[bold]{name}[/bold]\n{(doc or '').strip()}\n")
        if scenario is None and not list_:
            console.print("[yellow]choose one with --scenario NAME[/yellow]")
            raise typer.Exit(2)
        return
    from cli.main import _settings
    from runtime.mqtt_tls import tls_context

    settings = _settings()
    if token is None:
        from api.tokens import create_token
        from ingest.db import connect

        with connect(settings.database_url) as conn:
            token = create_token(conn, "admin", f"simulate {scenario}")
    url = api_url or f"http://{settings.api_host}:{settings.api_port}"
    try:
        report = run_scenario(scenario, api_url=url, admin_token=token, broker_host=settings.mqtt_host,
                              broker_port=settings.mqtt_client_port, tls=tls_context(settings),
                              topic_prefix=settings.topic_prefix, seed=seed,
                              speedup=speedup, duration_s=duration, devices=devices, rate=rate, offline=not online,
                              run_id=run_id, progress=True)
    except (ValueError, ApiError, RunnerError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if report.failed:
        raise typer.Exit(1)
