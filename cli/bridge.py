"""`cargotrace bridge scanner|gps`: serial devices on this host published as cargotrace devices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from devices.accounts import device_mqtt_version
from devices.bridge_cli import BridgeError, run_gps_bridge, run_scanner_bridge
from devices.scanner_bridge import FeedbackConfig
from runtime.logs import configure_logging
from runtime.settings import load_settings

bridge_app = typer.Typer(help="Serial scanners and NMEA GPS receivers bridged to MQTT, with a disk buffer.",
                         no_args_is_help=True)
console = Console(stderr=True)

Password = Annotated[str | None, typer.Option(
    help="the device's broker password (default: $CARGOTRACE_DEVICE_PASSWORD, so it stays out of `ps`)")]
Buffer = Annotated[Path | None, typer.Option(help="store-and-forward file (default: <state_dir>/bridge-<device>.db)")]


def _password(given: str | None) -> str:
    password = given or os.environ.get("CARGOTRACE_DEVICE_PASSWORD")
    if not password:
        console.print("[red]error:[/red] give --password or set CARGOTRACE_DEVICE_PASSWORD "
                      "(from `cargotrace device add`)")
        raise typer.Exit(2)
    return password


@bridge_app.command("scanner")
def scanner(
    port: Annotated[str, typer.Option(help="serial port, e.g. /dev/ttyUSB0")],
    device: Annotated[str, typer.Option(help="the device id (broker username)")],
    password: Password = None,
    baudrate: int = 9600,
    terminator: Annotated[str, typer.Option(help="line end the scanner sends: crlf, cr or lf")] = "crlf",
    separator: Annotated[str | None, typer.Option(help="character the scanner sends instead of GS")] = None,
    mode: Annotated[str | None, typer.Option(help="scan mode to put on every scan")] = None,
    location: Annotated[str | None, typer.Option(help="location code to put on every scan")] = None,
    buffer: Buffer = None,
    feedback: Annotated[bool, typer.Option(help="write the server's feedback (beep, line) to the scanner")] = True,
    beep_ok: Annotated[str, typer.Option(help="bytes for an accepted scan (escapes: \\a \\x07 \\r \\n)")] = "\\x07",
    beep_refused: Annotated[str, typer.Option(help="bytes for a refused scan")] = "\\x07\\x07\\x07",
    feedback_line: Annotated[str, typer.Option(help="line after the beep: {ok} {reason} {task_id} {msg_id}; "
                                                    "empty for none")] = "{ok} {reason} {task_id}\\r\\n",
) -> None:
    """Read a barcode scanner's serial line protocol and publish `scan` messages; feedback goes back."""
    settings = load_settings()
    configure_logging(settings.log_level)
    ends = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n"}
    if terminator not in ends:
        console.print("[red]error:[/red] --terminator must be crlf, cr or lf")
        raise typer.Exit(2)
    try:
        run_scanner_bridge(port, device, _password(password), host=settings.mqtt_host,
                           port_mqtt=settings.mqtt_client_port,
                           ca_file=str(settings.mqtt_ca_path) if settings.mqtt_tls else None,
                           prefix=settings.topic_prefix, mqtt_version=device_mqtt_version(settings),
                           buffer_path=buffer or settings.state_dir / f"bridge-{device}.db", baudrate=baudrate,
                           terminator=ends[terminator], separator=separator, mode=mode, location=location,
                           feedback=FeedbackConfig.from_text(beep_ok, beep_refused, feedback_line) if feedback
                           else None)
    except BridgeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@bridge_app.command("gps")
def gps(
    port: Annotated[str, typer.Option(help="serial port, e.g. /dev/ttyACM0")],
    device: Annotated[str, typer.Option(help="the device id (broker username)")],
    password: Password = None,
    baudrate: int = 9600,
    interval: Annotated[float, typer.Option(help="seconds between published fixes")] = 5.0,
    buffer: Buffer = None,
) -> None:
    """Read an NMEA 0183 GPS and publish `position` messages (checksums verified)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        run_gps_bridge(port, device, _password(password), host=settings.mqtt_host,
                       port_mqtt=settings.mqtt_client_port,
                       ca_file=str(settings.mqtt_ca_path) if settings.mqtt_tls else None,
                       prefix=settings.topic_prefix, mqtt_version=device_mqtt_version(settings),
                       buffer_path=buffer or settings.state_dir / f"bridge-{device}.db", baudrate=baudrate,
                       interval_s=interval)
    except BridgeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
