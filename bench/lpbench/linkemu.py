"""An emulated network link in user space: a TCP proxy that adds latency and limits bandwidth.

tc netem is not available on the bench machine (tc tbf is), so the bench puts this proxy between
every client and the registry. The link model is a pure function of a clock so that it can be
checked without timing anything (tests/test_linkemu.py).

Model, per direction: data leaves the sender no faster than `rate` bytes per second (one queue
shared by every connection, as on one physical link: parallel downloads split the bandwidth),
and arrives `delay` seconds after it left (half the round-trip time). There is no burst.
"""
import asyncio
import threading
import time


class LinkDirection:
    """One direction of a link: `arrival(n, now)` is when `n` bytes handed over at `now` arrive."""

    def __init__(self, rate_bytes_per_second, delay_seconds):
        self.rate = rate_bytes_per_second  # None: unlimited
        self.delay = delay_seconds
        self.free_at = 0.0  # when the sender's queue is empty again
        self.bytes = 0

    def arrival(self, n, now):
        self.bytes += n
        start = max(now, self.free_at)
        depart = start + (n / self.rate if self.rate else 0.0)
        self.free_at = depart
        return depart + self.delay


class LinkSpec:
    """A named link profile: `mbit` None means unlimited, `rtt_ms` 0 means no added latency."""

    def __init__(self, name, mbit, rtt_ms):
        self.name, self.mbit, self.rtt_ms = name, mbit, rtt_ms

    @property
    def shaped(self):
        return self.mbit is not None or self.rtt_ms > 0

    def directions(self):
        rate = self.mbit * 1e6 / 8 if self.mbit else None
        delay = self.rtt_ms / 2000.0
        return LinkDirection(rate, delay), LinkDirection(rate, delay)

    def label(self):
        if not self.shaped:
            return "loopback"
        return f"{self.mbit:g} Mbit/s, {self.rtt_ms:g} ms RTT"


class DelayProxy:
    """Serves `LinkSpec` between 127.0.0.1:`port` and `upstream`, in a thread of its own.

    `downloaded` and `uploaded` count the bytes that crossed the link (registry → client and
    client → registry); the bench reads them before and after each run.
    """

    def __init__(self, spec, port, upstream_host, upstream_port, clock=time.monotonic):
        self.spec, self.port = spec, port
        self.upstream = (upstream_host, upstream_port)
        self.clock = clock
        self.up, self.down = spec.directions()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"link-{port}")
        self.ready = threading.Event()
        self.error = None

    @property
    def downloaded(self):
        return self.down.bytes

    @property
    def uploaded(self):
        return self.up.bytes

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        if self.error:
            raise self.error
        return self

    def stop(self):
        async def cancel_connections():
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(cancel_connections(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        try:
            server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        except OSError as error:
            self.error = error
            self.ready.set()
            return
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            self.loop.run_until_complete(server.wait_closed())
            self.loop.close()

    async def _handle(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pump(client_reader, upstream_writer, self.up),
                             self._pump(upstream_reader, client_writer, self.down), return_exceptions=True)
        for writer in (client_writer, upstream_writer):
            try:
                writer.close()
            except OSError:
                pass

    async def _pump(self, reader, writer, direction):
        """Reads as fast as the sender sends; each piece is written when the link delivers it."""
        queue = asyncio.Queue()

        async def deliver():
            while True:
                item = await queue.get()
                if item is None:
                    break
                at, data = item
                wait = at - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass

        delivery = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(16384)
                if not data:
                    break
                queue.put_nowait((direction.arrival(len(data), self.clock()), data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait(None)
        try:
            await delivery
        except (ConnectionError, OSError):
            pass
        finally:
            # A peer that went away leaves the delivery waiting on a dead writer: end it here,
            # not when the loop collects it.
            if not delivery.done():
                delivery.cancel()
