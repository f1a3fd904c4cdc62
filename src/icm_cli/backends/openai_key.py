"""The API key of the openai backend: held so that nothing shows it, and the servers it would
reach unencrypted. openai_transport.py sends it only as each request's Authorization header."""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Sequence


class Secret:
    """Holds the API key so that no repr, log line or traceback variable dump shows it."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def sent_in_clear(urls: Sequence[str]) -> list[str]:
    """The hosts of plain http:// URLs that are not this machine: a key sent there crosses a network
    unencrypted. Loopback is 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost."""
    hosts = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme != "http" or host == "localhost" or host.endswith(".localhost"):
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None  # a name other than localhost: it may resolve anywhere
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (ip is None or not ip.is_loopback) and host not in hosts:
            hosts.append(host)
    return hosts
