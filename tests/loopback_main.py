"""The `python tests/<server>.py` entry shared by the loopback stand-in servers: serve one until interrupted.

Reads nothing; writes the server's port (and any `announce` values) as the first line of stdout, which the
parent process (a benchmark, a chaos script) reads before it sends requests.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


def serve_forever(make: Callable[[], Any], port: int = 0, announce: Callable[[Any], tuple] = lambda s: ()) -> None:
    """Build the server with `make()` inside the event loop (stand-ins make asyncio objects), serve it on
    `port` (0: any free one), print its port and `announce(server)` on one line, and serve until SIGINT."""
    async def run() -> None:
        server = make()
        srv = await server.serve(port)
        print(server.port, *announce(server), flush=True)
        async with srv:
            await srv.serve_forever()
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
