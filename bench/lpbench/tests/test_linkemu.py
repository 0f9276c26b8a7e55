"""The link model's delay and rate, on a fake clock (no timing in tests), and the proxy's bytes."""
import socket
import threading
import unittest

from lpbench.linkemu import DelayProxy, LinkDirection, LinkSpec


class LinkDirectionTests(unittest.TestCase):
    def test_schedule(self):
        # (rate B/s, delay s, [(bytes, handed over at)], expected arrivals)
        table = [
            # 100 Mbit/s, 10 ms one way: 12,500 B take 1 ms on the wire, then 10 ms of latency.
            (12.5e6, 0.010, [(12_500, 0.0)], [0.011]),
            # Back to back: the second waits for the first to leave the queue.
            (12.5e6, 0.010, [(12_500, 0.0), (12_500, 0.0)], [0.011, 0.012]),
            # Idle link: a later send starts at its own time, not when the queue emptied.
            (12.5e6, 0.010, [(12_500, 0.0), (12_500, 1.0)], [0.011, 1.011]),
            # Unlimited rate: latency only.
            (None, 0.040, [(1 << 30, 0.0), (1, 0.5)], [0.040, 0.540]),
            # 20 Mbit/s, 40 ms one way: a 1 MB blob is 0.4 s of serialisation.
            (2.5e6, 0.040, [(1_000_000, 2.0)], [2.44]),
        ]
        for rate, delay, sends, expected in table:
            with self.subTest(rate=rate, delay=delay, sends=sends):
                link = LinkDirection(rate, delay)
                got = [link.arrival(n, at) for n, at in sends]
                for g, e in zip(got, expected):
                    self.assertAlmostEqual(g, e, places=9)
                self.assertEqual(link.bytes, sum(n for n, _ in sends))

    def test_profiles(self):
        table = [
            (LinkSpec("loopback", None, 0), False, None, 0.0, "loopback"),
            (LinkSpec("100mbit", 100, 20), True, 12.5e6, 0.010, "100 Mbit/s, 20 ms RTT"),
            (LinkSpec("20mbit", 20, 80), True, 2.5e6, 0.040, "20 Mbit/s, 80 ms RTT"),
        ]
        for spec, shaped, rate, delay, label in table:
            with self.subTest(spec=spec.name):
                up, down = spec.directions()
                self.assertEqual(spec.shaped, shaped)
                self.assertEqual((down.rate, down.delay), (rate, delay))
                self.assertEqual((up.rate, up.delay), (rate, delay))
                self.assertEqual(spec.label(), label)


class DelayProxyTests(unittest.TestCase):
    def test_bytes_pass_unchanged_and_are_counted(self):
        server = socket.create_server(("127.0.0.1", 0))
        payload = bytes(range(256)) * 4096  # 1 MiB

        def serve():
            conn, _ = server.accept()
            with conn:
                request = conn.recv(5)
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                self.assertEqual(request, b"hello")

        worker = threading.Thread(target=serve)
        worker.start()
        # Unshaped, so the test takes no time worth mentioning; the schedule is tested above.
        proxy = DelayProxy(LinkSpec("loopback", None, 0), 0, "127.0.0.1", server.getsockname()[1])
        with socket.socket() as probe:  # a free port
            probe.bind(("127.0.0.1", 0))
            proxy.port = probe.getsockname()[1]
        proxy.start()
        try:
            with socket.create_connection(("127.0.0.1", proxy.port)) as client:
                client.sendall(b"hello")
                received = bytearray()
                while chunk := client.recv(65536):
                    received += chunk
            worker.join(5)
            self.assertEqual(bytes(received), payload)
            self.assertEqual(proxy.downloaded, len(payload))
            self.assertEqual(proxy.uploaded, 5)
        finally:
            proxy.stop()
            server.close()


if __name__ == "__main__":
    unittest.main()
