"""The bench's own state filesystem: journaled ext4 on a loop device, gone after close()."""
import os
import subprocess
import unittest

from lpbench.scratch import ScratchFS, has_journal
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
        attached = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                                  capture_output=True, text=True).stdout
        self.assertNotIn(image, attached)


if __name__ == "__main__":
    unittest.main()
