"""The container's HEALTHCHECK: GET /healthz of the receiver that is PID 1 in this container.

The address and port come from PID 1's own command line (`serve --host H --port P`), so
the check follows whatever command the container was started with; without them, the
command line's defaults (127.0.0.1:8080). Exit status 0 when /healthz answers 200, else 1.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

# Listening on every address: check through loopback.
_ANY = {"", "0.0.0.0", "::"}  # noqa: S104


def healthz_url(argv: Sequence[str]) -> str:
    """The /healthz URL of a receiver started with this command line."""
    options = {"--host": "127.0.0.1", "--port": "8080"}
    for i, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        if name in options:
            if sep:
                options[name] = value
            elif i + 1 < len(argv):
                options[name] = argv[i + 1]
    host = options["--host"]
    if host in _ANY:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{options['--port']}/healthz"


def main() -> int:
    try:
        argv = [a.decode() for a in Path("/proc/1/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        argv = []
    url = healthz_url(argv)
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (an http:// URL)
            status = int(response.status)
    except OSError as exc:
        print(f"{url}: {exc}")
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
