"""The ``cargotrace`` command line: the local stack, the services, devices, tokens, maintenance."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.tokens import ROLES, create_token, list_tokens, revoke_token
from cli.bridge import bridge_app
from cli.simulate import simulate_app
from cli.verify import verify_app
from devices.accounts import open_accounts
from devices.broker_accounts import BrokerError
from devices.provisioning import DEVICE_KINDS, DeviceSpec, ProvisioningError, add_device, remove_device, rotate_device
from ingest.db import StoreError, applied_versions, connect, describe, ensure_database, migrate, migrations
from ingest.maintenance import HYPERTABLES, apply_retention
from runtime.logs import configure_logging
from runtime.settings import Settings, load_settings

app = typer.Typer(help="cargotrace: warehouse and logistics telemetry into an ERP ledger.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
device_app = typer.Typer(help="Devices and their broker credentials.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)
dead_app = typer.Typer(help="Messages that could not be accepted.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(device_app, name="device")
app.add_typer(token_app, name="token")
app.add_typer(bench_app, name="bench")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(bridge_app, name="bridge")
app.add_typer(simulate_app, name="simulate")
app.add_typer(verify_app, name="verify")

console = Console(stderr=True)
T = TypeVar("T")

_EXPECTED = (StoreError, BrokerError, ProvisioningError, psycopg.Error, ValueError)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Expected failures (a service down, bad input) end with one clear line, not a traceback."""
    try:
        yield
    except _EXPECTED as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _settings(create_secrets: bool = False) -> Settings:
    settings = load_settings(create_secrets=create_secrets)
    configure_logging(settings.log_level)
    return settings


def _with_db(settings: Settings, fn: Callable[[psycopg.Connection], T]) -> T:
    with connect(settings.database_url) as conn:
        return fn(conn)


def with_service_roles(settings: Settings, *, bootstrap: bool = False) -> Settings:
    """The settings the services and migrations run with: the owner, ingest and API roles
    (ingest/db_roles.py). The superuser's one-time bootstrap (roles, database, TimescaleDB, grants)
    runs first unless all three roles' URLs are set (a DBA bootstrapped the database; ``bootstrap``
    forces it). With the feature off, everything connects with CARGOTRACE_DATABASE_URL."""
    if not settings.db_service_roles:
        if ensure_database(settings.database_url):
            console.print(f"created database {describe(settings.database_url)}")
        return settings
    configured = settings.owner_database_url and settings.ingest_database_url and settings.api_database_url
    if configured and not bootstrap:
        return settings
    from ingest.db_roles import bootstrap as bootstrap_database

    urls = bootstrap_database(settings)
    return settings.model_copy(update={f"{purpose}_database_url": url for purpose, url in urls.items()})


def migrate_as_owner(settings: Settings) -> list[str]:
    """Pending migrations, applied by the schema's owner role (never the bootstrap's superuser)."""
    return migrate(settings.owner_url)


def bring_up(settings: Settings) -> tuple[Settings, list[str]]:
    """Bootstrap the database (created if missing) and its roles, migrate as the owner role; the
    local broker and its service accounts. Returns the services' settings and the migrations applied."""
    settings = with_service_roles(settings)
    applied = migrate_as_owner(settings)
    if settings.manage_broker:
        from cli.local_broker import start_local_broker

        pid = start_local_broker(settings)
        console.print(f"broker: Mosquitto pid {pid} on {settings.mqtt_host}:{settings.mqtt_port} "
                      f"(config {settings.mosquitto_conf})")
    with open_accounts(settings) as accounts:
        accounts.ensure_service_accounts()
    from ingest.transport import prepare_ingest

    prepare_ingest(settings, settings.ingest_workers)
    return settings, applied


def _bring_up_cluster(settings: Settings, size: int, workers: int) -> list[str]:
    from cli.cluster import bring_up_cluster, cluster_settings

    settings = with_service_roles(cluster_settings(settings, size))
    applied = migrate_as_owner(settings)
    pids = bring_up_cluster(settings, workers)
    ports = ", ".join(str(node.mqtt_port) for node in _cluster_nodes(settings))
    console.print(f"NATS cluster: {len(pids)} node(s), pids {', '.join(map(str, pids))}; MQTT on {ports}; "
                  f"stream {settings.nats_stream} with {settings.nats_replicas} replica(s); {workers} ingest worker(s)")
    console.print(f"use it with: export CARGOTRACE_BROKER=nats CARGOTRACE_NATS_CLUSTER_SIZE={size} "
                  f"CARGOTRACE_MQTT_PORT={settings.mqtt_port}")
    return applied


def _cluster_nodes(settings: Settings) -> list[Any]:
    from cli.local_nats import nodes

    return list(nodes(settings))


@app.command()
def up(cluster: Annotated[int, typer.Option(
           "--cluster", help="start a local NATS JetStream cluster of this many nodes (and its ingest workers) "
                             "instead of Mosquitto")] = 0,
       workers: Annotated[int | None, typer.Option(help="ingest workers to start with --cluster")] = None) -> None:
    """Start or reuse the local stack (database, migrations, Mosquitto from mosquitto.conf). Idempotent."""
    settings = _settings(create_secrets=True)
    with _clear_errors():
        if cluster > 0:
            applied = _bring_up_cluster(settings, cluster, settings.ingest_workers if workers is None else workers)
        else:
            _, applied = bring_up(settings)
    console.print(f"database {describe(settings.database_url)}: "
                  f"{'applied ' + ', '.join(applied) if applied else 'schema up to date'}")
    console.print("[green]stack is up[/green]")


@app.command()
def down() -> None:
    """Stop the local Mosquitto started by `up` (PostgreSQL is a system service and keeps running)."""
    settings = _settings()
    with _clear_errors():
        from cli.cluster import bring_down_cluster
        from cli.local_broker import stop_local_broker

        stopped = stop_local_broker(settings)
        nodes_stopped = bring_down_cluster(settings)
    console.print("broker stopped" if stopped else "broker was not running")
    if nodes_stopped:
        console.print(f"NATS cluster stopped ({nodes_stopped} node(s)) with its ingest workers")


@app.command()
def status() -> None:
    """What runs and what the database holds."""
    settings = _settings()
    table = Table(title="cargotrace status")
    table.add_column("part")
    table.add_column("state")
    healthy = True
    try:
        with connect(settings.database_url) as conn:
            versions = applied_versions(conn)
            ts = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            table.add_row("database", f"[green]up[/green] {describe(settings.database_url)}")
            table.add_row("timescaledb", ts[0] if ts else "[red]not installed in this database[/red]")
            table.add_row("migrations", f"{len(versions)} of {len(migrations())} applied")
            if versions:
                for name in (*HYPERTABLES, "dead_letters", "devices"):
                    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
                    table.add_row(f"  {name}", f"{count[0] if count else 0} rows")
    except StoreError as exc:
        healthy = False
        table.add_row("database", f"[red]down[/red] {exc}")
    if settings.broker == "nats":
        healthy = _cluster_status_rows(settings, table) and healthy
    elif settings.manage_broker:
        from cli.local_broker import local_broker_status

        state = local_broker_status(settings)
        healthy = healthy and bool(state.get("running"))
        table.add_row("broker", f"{'[green]up[/green]' if state.get('running') else '[red]down[/red]'} "
                                f"port {state.get('port')} pid {state.get('pid')}")
    else:
        table.add_row("broker", f"external {settings.mqtt_host}:{settings.mqtt_port}")
    Console().print(table)
    if not healthy:
        raise typer.Exit(1)


def _cluster_status_rows(settings: Settings, table: Table) -> bool:
    """The NATS nodes (up, JetStream healthy, routes) and the device stream's replicas."""
    from cli.cluster import ingest_pid, stream_state
    from cli.local_nats import cluster_status

    healthy = True
    local = cluster_status(settings)
    for node in local:
        ok = node["up"] and node["healthy"]
        healthy = healthy and ok
        table.add_row(f"nats {node['node']}", f"{'[green]healthy[/green]' if ok else '[red]down[/red]'} "
                                              f"pid {node['pid']} client {node['client_port']} "
                                              f"mqtt {node['mqtt_port']} routes {node['routes']}")
    if not settings.nats_servers and not any(node["up"] for node in local):
        table.add_row("stream", "[red]no local NATS node runs[/red] (`cargotrace up --cluster 3`)")
        return False
    stream = stream_state(settings)
    if "error" in stream:
        healthy = False
        table.add_row("stream", f"[red]unavailable[/red] {stream['error']}")
    else:
        followers = ", ".join(f"{r['name']} {'current' if r['current'] else 'behind'} lag {r['lag'] or 0}"
                              for r in stream["replicas"])
        table.add_row(f"stream {settings.nats_stream}", f"{stream['replicas_configured']} replica(s), leader "
                      f"{stream['leader']}; followers: {followers or 'none'}; {stream['messages']} message(s)")
        table.add_row(f"consumer {settings.nats_durable}", f"{stream['pending']} pending, "
                      f"{stream['ack_pending']} delivered un-acked")
    pid = ingest_pid(settings)
    table.add_row("ingest workers", f"supervisor pid {pid}" if pid else "not started by `up --cluster`")
    return healthy


@db_app.command("bootstrap")
def db_bootstrap() -> None:
    """The one-time step that needs a superuser (CARGOTRACE_DATABASE_URL): the owner, ingest and API
    roles, the database owned by the owner role, TimescaleDB, grants. Idempotent; `up` runs it."""
    settings = _settings()
    with _clear_errors():
        settings = with_service_roles(settings, bootstrap=True)
    console.print(f"database {describe(settings.database_url)} bootstrapped; migrations run as "
                  f"{conninfo_to_dict(settings.owner_url).get('user')}")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations as the schema's owner role (a no-op when up to date)."""
    settings = _settings()
    with _clear_errors():
        applied = migrate_as_owner(with_service_roles(settings))
    console.print(f"applied: {', '.join(applied)}" if applied else "schema up to date")


def _serve(settings: Settings, workers: int, *, maintain: bool, api: bool) -> None:
    from cli.api_server import ApiServer, ApiServerError
    from ingest.downlink import downlink_loop
    from ingest.supervisor import Supervisor

    # Retention and the health loop run as the schema's owner role (not the migrating superuser);
    # the workers as the ingest role (settings.ingest_url), the API as its role (settings.api_url).
    supervisor = Supervisor(settings.model_copy(update={"database_url": settings.owner_url}), workers,
                            maintain=maintain)
    # Task lists and feedback to scanners (CONTRACT 3.1), as the ingest role, stopped with the workers.
    threading.Thread(target=downlink_loop, args=(settings.model_copy(update={"database_url": settings.ingest_url}),
                                                 supervisor.stop_event), name="downlink", daemon=True).start()
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    server = ApiServer(settings) if api else None
    if server is not None:
        try:
            server.start()
        except ApiServerError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        console.print(f"API on {server.url}/api/v1 (docs {server.url}/docs)")
    console.print(f"running {workers} ingest worker(s); Ctrl-C stops")
    try:
        supervisor.run()
    finally:
        if server is not None:
            server.stop()
    console.print("stopped cleanly")


@app.command()
def run(workers: Annotated[int | None, typer.Option(help="ingest worker processes")] = None) -> None:
    """Run the platform in the foreground: migrations, ingest workers, the API, scheduled retention."""
    settings = _settings()
    with _clear_errors():
        settings = with_service_roles(settings)
        migrate_as_owner(settings)
    _serve(settings, workers or settings.ingest_workers, maintain=True, api=True)


@app.command()
def ingest(workers: Annotated[int | None, typer.Option(help="ingest worker processes")] = None) -> None:
    """Run only the ingest workers in the foreground."""
    settings = _settings()
    with _clear_errors():
        settings = with_service_roles(settings)
    _serve(settings, workers or settings.ingest_workers, maintain=False, api=False)


@app.command()
def demo(once: Annotated[bool, typer.Option("--once", help="exit after the demo instead of running on")] = False,
         scenario: Annotated[bool, typer.Option(help="also run the normal-day scenario")] = True) -> None:
    """Start the local stack and the platform (ingest, API, dashboard), show sample traffic of every
    kind including bad messages, then run the normal-day scenario. Ctrl-C stops everything."""
    from cli.demo import run_demo_command

    # Tables, not log lines: the demo's platform logs warnings only (`cargotrace run` logs more).
    settings = _settings(create_secrets=True).model_copy(update={"log_level": "WARNING"})
    configure_logging(settings.log_level)
    ours = settings.manage_broker and not _local_broker_running(settings)
    try:
        with _clear_errors():
            services, _ = bring_up(settings)
            run_demo_command(services, once=once, scenario=scenario)
    except KeyboardInterrupt:
        pass  # Ctrl-C while the stack came up (the platform itself stops on Ctrl-C without it)
    finally:
        if ours:  # the broker the demo started goes with it; one `cargotrace up` started stays
            _stop_local_broker_quietly(settings)
    console.print("stopped cleanly")


def _local_broker_running(settings: Settings) -> bool:
    from cli.local_broker import local_broker_status

    return bool(local_broker_status(settings).get("pid"))


def _stop_local_broker_quietly(settings: Settings) -> None:
    from cli.local_broker import stop_local_broker

    # A second Ctrl-C must not leave the broker behind half-way: ignore it while the broker saves.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if stop_local_broker(settings):
            console.print("broker stopped")
    except BrokerError as exc:
        console.print(f"[red]error:[/red] {exc}")
    finally:
        signal.signal(signal.SIGINT, previous)


@app.command()
def maintain() -> None:
    """Apply retention once: drop chunks past each table's age, trim dead letters and identities."""
    settings = _settings()
    with _clear_errors(), connect(settings.database_url, autocommit=True) as conn:
        report = apply_retention(conn, settings)
    for table, n in report.chunks_dropped.items():
        console.print(f"{table}: {n} chunk(s) dropped")
    console.print(f"dead letters deleted: {report.dead_letters_deleted}; "
                  f"identities expired: {report.message_ids_deleted}")


@app.command()
def rebuild(check: Annotated[bool, typer.Option("--check", help="compare only, change nothing")] = False) -> None:
    """Recompute balances and serial locations from the ledger (they are derived state)."""
    from ingest.rebuild import rebuild as do_rebuild

    settings = _settings()
    with _clear_errors(), connect(settings.database_url) as conn:
        report = do_rebuild(conn, write=not check)
    for sku, location, lot, live, ledger in report.differences:
        console.print(f"[yellow]differs[/yellow] {sku} @ {location} lot {lot or '-'}: live {live}, ledger {ledger}")
    verdict = "identical to" if not report.differences else f"{len(report.differences)} difference(s) from"
    console.print(f"live balances are {verdict} the ledger; {report.balances} non-zero balance(s)"
                  f"{'' if check else ' (rewritten from the ledger)'}")
    if check and report.differences:
        raise typer.Exit(1)


@dead_app.command("list")
def dead_letters_list(
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
) -> None:
    """Show dead letters, newest first."""
    settings = _settings()
    table = Table(title="dead letters")
    for col in ("id", "received", "device", "reason", "detail", "replay"):
        table.add_column(col)
    with _clear_errors(), connect(settings.database_url) as conn:
        for row in conn.execute("SELECT id, received_at, device_id, reason, detail, replay_result FROM dead_letters "
                                "WHERE %s::text IS NULL OR reason = %s ORDER BY received_at DESC, id DESC LIMIT %s",
                                (reason, reason, limit)):
            # Device ids, reasons and details come from devices: never let them be rich markup.
            table.add_row(str(row[0]), f"{row[1]:%Y-%m-%d %H:%M:%S}", escape(row[2] or "-"), escape(row[3]),
                          escape(row[4][:70]), escape(row[5] or ""))
    Console().print(table)


@dead_app.command("replay")
def dead_letters_replay(
    reason: Annotated[str | None, typer.Option(help="only letters with this reason, e.g. unknown_gtin")] = None,
    device: Annotated[str | None, typer.Option(help="only letters of this device")] = None,
) -> None:
    """Re-apply dead letters after the master data was fixed; each is marked with the outcome."""
    from ingest.pipeline import PipelineConfig
    from ingest.replay import replay

    settings = _settings()
    with _clear_errors(), connect(settings.database_url) as conn:
        results = replay(conn, PipelineConfig.from_settings(settings), reason=reason, device=device)
    applied = sum(r.outcome == "applied" for r in results)
    for r in results:
        console.print(f"dead letter {r.letter_id}: {r.outcome}")
    console.print(f"replayed {len(results)}: {applied} applied, {len(results) - applied} not")


@device_app.command("add")
def device_add(
    device_id: str,
    kind: Annotated[str, typer.Option(help=f"one of {', '.join(DEVICE_KINDS)}")],
    site: str | None = None,
    location: str | None = None,
    mode: str | None = None,
    vehicle: str | None = None,
) -> None:
    """Register a device and print its broker credentials (shown once)."""
    settings = _settings()
    spec = DeviceSpec(device_id, kind, site=site, location=location, mode=mode, vehicle=vehicle)
    with _clear_errors():
        creds = _with_db(settings, lambda conn: add_device(settings, conn, spec))
    _print_credentials(creds.username, creds.password, creds.host, creds.port, creds.publish_topic)


@device_app.command("rotate")
def device_rotate(device_id: str) -> None:
    """Issue a new broker password; the old one stops working at once."""
    settings = _settings()
    with _clear_errors():
        creds = _with_db(settings, lambda conn: rotate_device(settings, conn, device_id))
    _print_credentials(creds.username, creds.password, creds.host, creds.port, creds.publish_topic)


@device_app.command("remove")
def device_remove(device_id: str) -> None:
    """Revoke the device's broker access (a connected device is disconnected) and unregister it."""
    settings = _settings()
    with _clear_errors():
        existed = _with_db(settings, lambda conn: remove_device(settings, conn, device_id))
    console.print(f"removed {device_id}" if existed else f"{device_id} was not registered (broker access revoked)")


def _print_credentials(username: str, password: str, host: str, port: int, topic: str) -> None:
    sys.stdout.write(f"username={username}\npassword={password}\nbroker={host}:{port}\ntopic={topic}\n")


_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``12h``, ``30d`` → a timedelta; anything else is a ValueError with the format."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _DURATION_UNITS or not number.isascii() or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"invalid duration {text!r}: use a positive number with m, h or d, e.g. 30d")
    return timedelta(seconds=int(number) * _DURATION_UNITS[unit])


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    label: Annotated[str | None, typer.Option(help="who or what the token is for")] = None,
    expires_in: Annotated[str | None, typer.Option(help="lifetime, e.g. 12h or 30d (default: no expiry)")] = None,
) -> None:
    """Create an API token and print only the token."""
    settings = _settings()
    with _clear_errors():
        lifetime = parse_duration(expires_in) if expires_in else None
        token = _with_db(settings, lambda conn: create_token(conn, role, label, lifetime))
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list() -> None:
    """Every token: id, role, label, creation, expiry, last use, revocation (never the token)."""
    settings = _settings()
    with _clear_errors():
        tokens = _with_db(settings, list_tokens)
    table = Table(title="API tokens")
    for col in ("id", "role", "label", "created", "expires", "last used", "state"):
        table.add_column(col)
    now = datetime.now(UTC)

    def when(ts: datetime | None) -> str:
        return "-" if ts is None else f"{ts:%Y-%m-%d %H:%M}"

    for t in tokens:
        state = ("revoked" if t.revoked_at is not None
                 else "expired" if t.expires_at is not None and t.expires_at <= now else "valid")
        table.add_row(str(t.id), t.role, escape(t.label or "-"), when(t.created_at), when(t.expires_at),
                      when(t.last_used_at), state)
    Console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="the id shown by `cargotrace token list`")]) -> None:
    """Revoke a token: every request with it is refused from now on, and its event streams close."""
    settings = _settings()
    with _clear_errors():
        found = _with_db(settings, lambda conn: revoke_token(conn, token_id))
    if not found:
        console.print(f"[red]error:[/red] no token with id {token_id}; see `cargotrace token list`")
        raise typer.Exit(1)
    console.print(f"token {token_id} revoked")


@bench_app.command("ingest")
def bench_ingest(
    messages: Annotated[int, typer.Option(help="backlog size")] = 200_000,
    workers: Annotated[int | None, typer.Option(help="ingest worker processes")] = None,
    devices: Annotated[int, typer.Option(help="publishing devices")] = 8,
    live_rate: Annotated[int, typer.Option(help="msg/s in the latency phase")] = 2000,
    live_seconds: Annotated[float, typer.Option(help="length of the latency phase")] = 15.0,
    out: Annotated[Path, typer.Option(help="where the plot and JSON go")] = Path("bench-results"),
    broker: Annotated[str | None, typer.Option(
        help="nats: backlog drain with 1, 2 and 4 workers on a private 3-node NATS cluster beside Mosquitto "
             "in the same run (a scaling table)")] = None,
) -> None:
    """Backlog drain vs broker and COPY ceilings, then live latency; last line is JSON."""
    from cli.bench_ingest import run_bench
    from simulators.loadgen import LoadError

    settings = _settings()
    with _clear_errors():
        try:
            if broker is not None:
                if broker != "nats":
                    raise ValueError(f"--broker must be nats (Mosquitto runs beside it), not {broker!r}")
                from cli.bench_scaling import print_table, run_scaling

                counts = [workers] if workers else [1, 2, 4]
                print_table(run_scaling(settings, messages, devices, counts, out))
                return
            run_bench(settings, messages, workers or settings.ingest_workers, devices, live_rate, live_seconds, out)
        except LoadError as exc:
            raise ValueError(f"benchmark failed: {exc}") from None


@bench_app.command("scans")
def bench_scans(
    messages: Annotated[int, typer.Option(help="scans in the backlog")] = 100_000,
    workers: Annotated[int | None, typer.Option(help="ingest worker processes")] = None,
    background_rate: Annotated[int, typer.Option(help="env msg/s while measuring latency")] = 2000,
    live_scans: Annotated[int, typer.Option(help="scans timed through the API")] = 300,
    out: Annotated[Path, typer.Option(help="where the plot and JSON go")] = Path("bench-results"),
    prefill: Annotated[int, typer.Option(help="movements of history written before a second, "
                                              "compared drain (0: none)")] = 0,
) -> None:
    """Movements/s draining a scan backlog (on an empty and, with --prefill, a filled ledger), then
    scan-to-API latency under load; last line is JSON."""
    from cli.bench_scans import run_scan_bench
    from simulators.loadgen import LoadError

    settings = _settings()
    with _clear_errors():
        try:
            run_scan_bench(settings, messages, workers or settings.ingest_workers, background_rate, live_scans, out,
                           prefill)
        except LoadError as exc:
            raise ValueError(f"benchmark failed: {exc}") from None


@bench_app.command("orders")
def bench_orders(
    lines: Annotated[int, typer.Option(help="order lines released (5 per order)")] = 10_000,
    scanners: Annotated[int, typer.Option(help="simulated scanners working the pick tasks")] = 200,
    workers: Annotated[int | None, typer.Option(help="ingest worker processes")] = None,
    background_rate: Annotated[int, typer.Option(help="env msg/s while picking")] = 2000,
    out: Annotated[Path, typer.Option(help="where the plot and JSON go")] = Path("bench-results"),
) -> None:
    """Order lines allocated per second, then scan -> feedback latency while scanners pick; last line is JSON."""
    from cli.bench_orders import run_orders_bench
    from simulators.loadgen import LoadError

    settings = _settings()
    with _clear_errors():
        try:
            run_orders_bench(settings, lines, scanners, workers or settings.ingest_workers, background_rate, out)
        except LoadError as exc:
            raise ValueError(f"benchmark failed: {exc}") from None


@bench_app.command("telemetry")
def bench_telemetry(
    vehicles: Annotated[int, typer.Option(help="vehicles, each with a tracker and a sensor")] = 1000,
    per_vehicle: Annotated[int, typer.Option(help="positions (and as many readings) per vehicle")] = 50,
    workers: Annotated[int | None, typer.Option(help="ingest worker processes")] = None,
    background_rate: Annotated[int, typer.Option(help="env msg/s while timing alarms")] = 2000,
    timed: Annotated[int, typer.Option(help="alarms timed through the API")] = 40,
    out: Annotated[Path, typer.Option(help="where the plot and JSON go")] = Path("bench-results"),
    prefill: Annotated[int, typer.Option(help="also run on a database pre-filled with this many readings and "
                                              "as many positions (e.g. 10000000); 0: empty only")] = 0,
) -> None:
    """Fleet positions and readings with every rule on, then excursion-to-alarm latency; last line is JSON."""
    from cli.bench_telemetry import run_telemetry_bench
    from simulators.loadgen import LoadError

    settings = _settings()
    with _clear_errors():
        try:
            run_telemetry_bench(settings, vehicles, per_vehicle, workers or settings.ingest_workers, background_rate,
                                timed, out, prefill)
        except LoadError as exc:
            raise ValueError(f"benchmark failed: {exc}") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
