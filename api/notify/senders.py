"""The two channels: a webhook POST (signed, with an idempotency key) and an email over SMTP.

Each returns (ok, http_status, error); a foreign exception is translated here, where the adapter
meets the library, into a failed attempt with its reason.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Any

import httpx
import orjson

from api.service_config import ServiceSettings
from core.delivery import signature

Attempt = tuple[bool, int | None, str | None]


def body_of(delivery: dict[str, Any]) -> bytes:
    return orjson.dumps(delivery["payload"], option=orjson.OPT_SORT_KEYS)


def send_webhook(client: httpx.Client, delivery: dict[str, Any]) -> Attempt:
    body = body_of(delivery)
    headers = {"Content-Type": "application/json", "User-Agent": "cargotrace-notifier/1",
               "X-Cargotrace-Event": delivery["kind"], "X-Cargotrace-Delivery": delivery["delivery_key"],
               "X-Cargotrace-Signature": signature(delivery["secret"], body)}
    try:
        response = client.post(delivery["target"], content=body, headers=headers)
    except httpx.HTTPError as e:
        return False, None, f"{type(e).__name__}: {e}"[:500]
    if 200 <= response.status_code < 300:
        return True, response.status_code, None
    return False, response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def send_email(config: ServiceSettings, delivery: dict[str, Any]) -> Attempt:
    data = delivery["payload"]
    what = data.get("data", {})
    msg = EmailMessage()
    msg["From"] = config.smtp_from
    msg["To"] = delivery["target"]
    label = f"{delivery['kind']} {what.get('id') or what.get('ref') or ''}".strip()
    status = what.get("status")
    msg["Subject"] = f"[cargotrace] {label}" + (f": {status}" if status else "")
    msg["X-Cargotrace-Event"] = delivery["kind"]
    msg["X-Cargotrace-Delivery"] = delivery["delivery_key"]
    msg.set_content(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    try:
        with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.webhook_timeout_s) as smtp:
            if config.smtp_starttls:
                smtp.starttls()
            if config.smtp_user:
                smtp.login(config.smtp_user, config.smtp_password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as e:
        return False, None, f"{type(e).__name__}: {e}"[:500]
    return True, None, None
