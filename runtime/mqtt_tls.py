"""TLS for every MQTT client of the platform (services, bridges, simulators) from one setting.

``CARGOTRACE_MQTT_TLS=true``: connect to ``CARGOTRACE_MQTT_TLS_PORT`` and verify the broker's
certificate against ``CARGOTRACE_MQTT_CA_FILE`` (default: the CA `cargotrace up` generated).
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from runtime.settings import Settings


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying client context (hostname checked, TLS 1.2+), or None without TLS."""
    if not settings.mqtt_tls:
        return None
    context = ssl.create_default_context(cafile=str(settings.mqtt_ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def apply_tls(client: mqtt.Client, settings: Settings) -> None:
    context = tls_context(settings)
    if context is not None:
        client.tls_set_context(context)
