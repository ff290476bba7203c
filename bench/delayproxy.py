"""A TCP proxy that delays every chunk by a fixed time in each direction (a long link).

``python -m bench.delayproxy --delay 0.025 LISTEN_PORT:TARGET_PORT [...]`` forwards
127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT.  Each chunk is delivered `delay` seconds
after it was read, in order, without holding back the chunks behind it: a link with
that latency and no bandwidth limit, so a request and its answer take 2 x delay more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def feed() -> None:
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    feeder = asyncio.ensure_future(feed())
    try:
        await deliver()
    except OSError:
        pass
    finally:
        feeder.cancel()


def _handler(target: int, delay: float):  # type: ignore[no-untyped-def]
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _pump(client_r, upstream_w, delay), _pump(upstream_r, client_w, delay)
            )
        finally:
            for w in (client_w, upstream_w):
                with contextlib.suppress(Exception):
                    w.close()

    return handle


async def _main(pairs: list[tuple[int, int]], delay: float) -> None:
    servers = [
        await asyncio.start_server(_handler(target, delay), "127.0.0.1", listen)
        for listen, target in pairs
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.025, help="seconds each way (0.025)")
    parser.add_argument("pairs", nargs="+", metavar="LISTEN_PORT:TARGET_PORT")
    args = parser.parse_args()
    pairs = [(int(a), int(b)) for a, b in (p.split(":") for p in args.pairs)]
    asyncio.run(_main(pairs, args.delay))


if __name__ == "__main__":
    main()
