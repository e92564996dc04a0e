"""What ``--server`` means: ingest itself, or the gateway the agent enrols through.

Accepted forms (anything else is refused at start, naming these):

* ``HOST`` - ingest on its default ports (frames 5555, control 5556);
* ``HOST:PORT`` / ``tcp://HOST[:PORT]`` - ingest with frames on PORT, control on PORT+1;
* ``http(s)://HOST[:PORT][/prefix]`` - the gateway (the seed's one-liner): the agent
  asks it where ingest is and for ingest's public key (``GET /api/agents/bootstrap``).

HOST is a DNS name, an IPv4 address or an IPv6 address (``[::1]:5555`` with a port).

    >>> parse_server("http://10.0.0.2:5002").gateway_url
    'http://10.0.0.2:5002'
    >>> parse_server("10.0.0.2:6000").endpoints(5555, 5556)
    ('tcp://10.0.0.2:6000', 'tcp://10.0.0.2:6001')
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

ACCEPTED_FORMS = (
    "HOST, HOST:PORT, tcp://HOST[:PORT] (ingest) or http(s)://HOST[:PORT] (the gateway)"
)
GATEWAY_PORT = 5002

_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")


class ServerError(ValueError):
    """A ``--server`` value that is none of the accepted forms."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"--server {value!r}: {reason}; accepted forms: {ACCEPTED_FORMS}")


@dataclass(frozen=True)
class ServerTarget:
    """A parsed ``--server``: ``kind`` is ``ingest`` or ``gateway``."""

    kind: str
    host: str
    port: int | None = None
    #: Base URL of the gateway (``kind == "gateway"``), without a trailing slash.
    gateway_url: str | None = None

    @property
    def zmq_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def endpoints(self, frame_port: int, control_port: int) -> tuple[str, str]:
        """Ingest's frame and control endpoints (``kind == "ingest"``)."""
        if self.port is not None:
            frame_port, control_port = self.port, self.port + 1
        return f"tcp://{self.zmq_host}:{frame_port}", f"tcp://{self.zmq_host}:{control_port}"


def _host(value: str, host: str) -> str:
    if not host:
        raise ServerError(value, "no host")
    if "%" in host:
        raise ServerError(value, "IPv6 zone ids (%...) are not supported")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.match(host) or ".." in host:
        raise ServerError(value, f"{host!r} is not a valid host name or address")
    return host


def _port(value: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ServerError(value, f"port {text!r} must be a number from 1 to 65535")
    return int(text)


def parse_server(value: str | None) -> ServerTarget:
    """Parse a ``--server`` value; :class:`ServerError` (a ``ValueError``) if invalid."""
    text = (value or "").strip()
    if not text:
        raise ServerError(value or "", "empty")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ServerError(text, "contains spaces or control characters")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("http", "https", "tcp"):
            raise ServerError(text, f"unsupported scheme {scheme + '://'!r}")
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"
            raise ServerError(text, str(exc)) from None
        if parts.username or parts.password:
            raise ServerError(text, "credentials in the URL are not accepted")
        if parts.query or parts.fragment:
            raise ServerError(text, "a query or fragment is not accepted")
        netloc = parts.netloc
        if netloc.startswith("["):
            if "]" not in netloc:
                raise ServerError(text, "malformed [IPv6]:PORT")
            host_text, _, rest = netloc[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
            if rest and not rest.startswith(":"):
                raise ServerError(text, "malformed [IPv6]:PORT")
        else:
            host_text, _, port_text = netloc.partition(":")
            if ":" in netloc and not port_text:
                raise ServerError(text, "empty port")
        host = _host(text, host_text)
        port = _port(text, port_text) if port_text else None
        if scheme == "tcp":
            if parts.path not in ("", "/"):
                raise ServerError(text, "a tcp:// endpoint has no path")
            return ServerTarget("ingest", host, port)
        zhost = f"[{host}]" if ":" in host else host
        base = f"{scheme}://{zhost}" + (f":{port}" if port else "") + parts.path.rstrip("/")
        return ServerTarget("gateway", host, port, gateway_url=base)
    if text.startswith("["):  # [v6] or [v6]:PORT
        if "]" not in text:
            raise ServerError(text, "malformed [IPv6]:PORT")
        host_text, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ServerError(text, "malformed [IPv6]:PORT")
        return ServerTarget(
            "ingest", _host(text, host_text), _port(text, rest[1:]) if rest else None
        )
    if text.count(":") > 1:  # a bare IPv6 address
        try:
            return ServerTarget("ingest", str(ipaddress.IPv6Address(text)))
        except ValueError:
            raise ServerError(text, "not a valid IPv6 address (write [ADDR]:PORT)") from None
    host_text, sep, port_text = text.partition(":")
    if sep and not port_text:
        raise ServerError(text, "empty port")
    if "/" in text:
        raise ServerError(text, "a path needs http(s)://")
    return ServerTarget("ingest", _host(text, host_text), _port(text, port_text) if sep else None)
