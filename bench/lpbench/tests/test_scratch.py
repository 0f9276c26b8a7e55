"""The bench's own state filesystem: journaled ext4 on a loop device, gone after close()."""
import os
import subprocess
import unittest

from unittest import mock

from lpbench.scratch import ScratchFS, has_journal, remove_stale
from lpbench.tools import mounts_below


@unittest.skipUnless(os.geteuid() == 0, "needs root (loop devices, mount)")
class ScratchFSTests(unittest.TestCase):
    def test_made_journaled_and_removed(self):
        scratch = ScratchFS()
        try:
            self.assertEqual(mounts_below(scratch.mountpoint), [scratch.mountpoint])
            self.assertTrue(has_journal(scratch.device))
            self.assertIn("journaled", scratch.describe())
            with open(os.path.join(scratch.mountpoint, "probe"), "wb") as f:
                f.write(b"x" * 65536)
            scratch.trim()
        finally:
            image = scratch.image
            scratch.close()
        self.assertEqual(mounts_below(scratch.mountpoint), [])
        self.assertFalse(os.path.exists(scratch.mountpoint))
        self.assertFalse(os.path.exists(image))
        self.assertNotIn(image, _attached())

    def test_stale_scratch_of_a_dead_bench_is_removed(self):
        finished = subprocess.Popen(["true"])
        finished.wait()
        with mock.patch("os.getpid", return_value=finished.pid):
            stale = ScratchFS()  # as a bench killed before its close() leaves it
        live = ScratchFS()
        try:
            remove_stale()
            self.assertEqual(mounts_below(stale.mountpoint), [])
            self.assertFalse(os.path.exists(stale.mountpoint))
            self.assertFalse(os.path.exists(stale.image))
            self.assertNotIn(stale.image, _attached())
            # This process's own scratch filesystem stays.
            self.assertEqual(mounts_below(live.mountpoint), [live.mountpoint])
            self.assertIn(live.image, _attached())
        finally:
            live.close()
            if os.path.exists(stale.mountpoint):  # only when remove_stale failed
                stale.close()


def _attached():
    return subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                          capture_output=True, text=True).stdout


if __name__ == "__main__":
    unittest.main()
