#!/usr/bin/env python3
"""delay-proxy.py --listen PORT --upstream HOST:PORT [--rtt-ms 20] [--mbit 100] [--ready-file F]

A TCP proxy that emulates a slow link in user space (tc netem is not available here):
every byte is delayed by half the RTT in each direction, and each direction is limited to
MBIT megabits per second (serialisation delay on a shared link, as a token bucket with no burst).
"""
import argparse
import asyncio
import os
import time


class Link:
    """One direction of the emulated link: bytes leave at `rate`, arrive `delay` later."""

    def __init__(self, rate_bytes, delay):
        self.rate = rate_bytes
        self.delay = delay
        self.free_at = 0.0

    def arrival(self, n):
        now = time.monotonic()
        depart = max(now, self.free_at) + n / self.rate
        self.free_at = depart
        return depart + self.delay


async def pump(reader, writer, link):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            item = await queue.get()
            if item is None:
                break
            at, data = item
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(16384)
            if not data:
                break
            queue.put_nowait((link.arrival(len(data)), data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait(None)
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rtt-ms", type=float, default=20)
    ap.add_argument("--mbit", type=float, default=100)
    ap.add_argument("--ready-file")
    args = ap.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    rate = args.mbit * 1e6 / 8
    delay = args.rtt_ms / 2000

    # One link shared by every connection: parallel downloads split the bandwidth.
    down, up = Link(rate, delay), Link(rate, delay)

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, up_writer, up), pump(up_reader, client_writer, down))
        for w in (client_writer, up_writer):
            try:
                w.close()
            except OSError:
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", args.listen)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write("ready\n")
        os.replace(args.ready_file + ".tmp", args.ready_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
