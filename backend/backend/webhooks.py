"""Calling a user's webhook when one of their jobs ends: the job's JSON, signed with the user's
secret (`X-Nias-Signature: sha256=<HMAC-SHA256 of the body>`), retried with backoff.

A webhook may call only public addresses, unless the admin lists other networks
(`NIAS_WEBHOOK_ALLOW_NETWORKS`): a URL that names or resolves to loopback, private, link-local or
reserved addresses is refused when it is saved and again when it is called.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import queue
import secrets
import socket
import threading
from collections import OrderedDict
from urllib.parse import urlsplit

import requests

from nias.errors import BadRequest
from nias.retry import Backoff
from nias.settings import Settings
from nias.states import is_final

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Nias-Signature"
TIMEOUT_S = 10
BACKLOG = 1000
REMEMBERED = 10_000  # jobs whose end was announced already (a cancel's kept result is news twice)


class WebhookRefused(BadRequest):
    """Raised when a webhook URL is not one NIAS may call."""

    code = "webhook_refused"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_secret() -> str:
    return secrets.token_hex(32)


def allowed_networks(settings: Settings) -> list:
    networks = []
    for part in (settings.webhook_allow_networks or "").split(","):
        if part.strip():
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
    return networks


def check_target(url: object, settings: Settings) -> str:
    """The URL, if NIAS may call it; WebhookRefused (naming the `url` field) otherwise."""
    if not isinstance(url, str) or len(url) > 500:
        raise WebhookRefused("The webhook URL must be an http(s) address of at most 500 characters.", field="url")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("The webhook URL must start with http:// or https:// and name a host.", field="url")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"The webhook's host {parts.hostname!r} cannot be found.", field="url") from None
    allowed = allowed_networks(settings)
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        public = address.is_global and not address.is_multicast
        if not public and not any(address in network for network in allowed):
            raise WebhookRefused(f"The webhook's host {parts.hostname!r} is at {address}, an address this server "
                                 "does not call (loopback, private or reserved); an admin can allow its network "
                                 "with NIAS_WEBHOOK_ALLOW_NETWORKS.", field="url")
    return url.strip()


class WebhookSender:
    """Hears every job change; when a job has ended, calls its owner's webhook from a thread of its own."""

    def __init__(self, store, settings: Settings, render, *, backoff: Backoff | None = None):
        self._store, self._settings, self._render = store, settings, render
        self._backoff = backoff or Backoff(tries=6, first_s=1.0, max_s=60.0)
        self._queue: queue.Queue = queue.Queue(maxsize=BACKLOG)
        self._announced: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def hear(self, job: dict | None) -> None:
        """A feed listener: must not block."""
        if job is None:
            self._backoff.stop.set()
            return
        if not is_final(job["state"]) or job.get("result_due") is not None or not job.get("owner_id"):
            return
        with self._lock:
            if job["id"] in self._announced:
                return
            self._announced[job["id"]] = None
            while len(self._announced) > REMEMBERED:
                self._announced.popitem(last=False)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            logger.warning("Job %s: webhook backlog full; this end is not announced", job["id"])

    def start(self) -> None:
        threading.Thread(target=self._loop, name="webhooks", daemon=True).start()

    def _loop(self) -> None:
        while not self._backoff.stop.is_set():
            try:
                job = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                self.deliver(job)
            except Exception:  # noqa: BLE001 - one bad call must not stop the others
                logger.exception("Job %s: the webhook call failed", job["id"])

    def deliver(self, job: dict) -> None:
        owner = self._store.get_user(job["owner_id"])
        if not owner or not owner.get("webhook_url") or not owner.get("webhook_secret"):
            return
        url = check_target(owner["webhook_url"], self._settings)
        body = json.dumps({"event": "job.finished", "job": self._render(job)}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(owner["webhook_secret"], body),
                   "User-Agent": "NIAS webhook"}

        def call() -> None:
            answer = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_S, allow_redirects=False)
            if answer.status_code >= 300:
                raise requests.HTTPError(f"the webhook answered {answer.status_code}")

        self._backoff.call(call, (requests.RequestException,), f"Job {job['id']}: webhook {url}")
        logger.info("Job %s: webhook %s called", job["id"], url)
