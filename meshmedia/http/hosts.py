"""Which Host header a server answers (a DNS-rebinding browser sends a name: 421)."""

from __future__ import annotations

import re
import socket

from meshmedia.config import is_ip


def own_names() -> tuple[str, ...]:
    """This machine's own names a Host header may carry: its host name and
    `<hostname>.local` (mDNS). No DNS lookup: it would stall a start without DNS."""
    name = socket.gethostname().lower()
    return (name, f"{name}.local") if name else ()


def host_allowed(host: str | None, names: tuple[str, ...] = ()) -> bool:
    """True when a Host header may reach this server: none at all (HTTP/1.0), a literal
    IP address, `localhost` or one of `names` (the server's own), with any port. A
    browser led here by a rebound DNS name sends that name: refused (421)."""
    if host is None:
        return True
    text = host.strip().lower()
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        port_ok = not rest or re.fullmatch(r":\d{1,5}", rest) is not None
        return bool(bracket) and port_ok and is_ip(literal)
    name, _, port = text.partition(":")
    if port and not port.isdigit():
        return False
    name = name.rstrip(".")
    return name == "localhost" or name in names or is_ip(name)
