"""The filesystem every system under test keeps its state on.

By default the bench makes its own: a fresh ext4 with mkfs's defaults (journal included) on a
loop device with direct I/O, backed by a sparse file under /var/tmp (its tables initialised at
once, so no lazy-init thread writes in the background while runs are timed). Every system's state
(containerd's, podman's, stargz-snapshotter's and lazypull's) lives there, so all of them meet
the same filesystem, in the same state, whatever the host's root filesystem is.

Why not the host's /var/tmp: ext4 without a journal (this machine's root) does not reuse an
inode freed in the last 60 s, or 360 s while its inode-table block is dirty, and each inode
allocation scans past every such inode again (fs/ext4/ialloc.c, `recently_deleted`). Wiping
one cold run's tree then slows the next run's file creation by an amount that depends on what
ran before it: the same eager cell read 1.27-2.49 s there, and 1.28-1.32 s on a journaled ext4.
Production container hosts run journaled ext4 or XFS.

`--scratch host` keeps the state under /var/tmp instead.
"""
import os
import re
import subprocess
import tempfile

from .tools import kill_matching, run, unmount_below

SIZE = "48G"  # sparse
TRIM_ABOVE = 16 << 30  # backing-file bytes past which freed blocks are handed back (at most)


class ScratchFS:
    """A loop-mounted ext4 made for one bench run, removed by `close()`."""

    def __init__(self, parent="/var/tmp"):
        self.image = None
        self.device = None
        remove_stale(parent)
        # Short: podman refuses a runroot path over 50 characters.
        self.mountpoint = tempfile.mkdtemp(prefix=f"lpb-{os.getpid()}-", dir=parent)
        try:
            self.image = self.mountpoint + ".img"
            # Past this the backing file gives freed blocks back: never more than half of what
            # the host has free, so a long bench cannot fill the host's disk.
            host = os.statvfs(parent)
            self.trim_above = min(TRIM_ABOVE, host.f_bavail * host.f_frsize // 2)
            with open(self.image, "wb") as f:
                f.truncate(_bytes(SIZE))
            # Tables initialised now: no lazy-init thread writing in the background while timing.
            run(["mkfs.ext4", "-q", "-F", "-L", "lpbench", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                 self.image])
            self.device = run(["losetup", "--direct-io=on", "--find", "--show", self.image]).strip()
            run(["mount", "-t", "ext4", self.device, self.mountpoint])
            self.work = os.path.join(self.mountpoint, "work")
            os.mkdir(self.work)
        except BaseException:
            self.close()
            raise

    def describe(self):
        """One line for the report: what the state lives on."""
        journal = "journaled" if has_journal(self.device) else "no journal"
        return f"ext4 ({journal}, mkfs defaults) on {self.device} with direct I/O, made for this run"

    def trim(self):
        """Hands freed blocks back once the backing file has grown past `trim_above`. Not on
        every run: a trim punches holes that the host then has to allocate (and discard) again,
        which slowed the runs after it."""
        if os.stat(self.image).st_blocks * 512 > self.trim_above:
            subprocess.run(["fstrim", self.mountpoint], capture_output=True)

    def close(self):
        _dismantle(self.mountpoint)
        self.device = None


class HostScratch:
    """State under /var/tmp on the host's own filesystem (`--scratch host`)."""

    def __init__(self, parent="/var/tmp"):
        self.mountpoint = parent
        self.work = tempfile.mkdtemp(prefix="lazypull-bench-", dir=parent)

    def describe(self):
        source = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", self.mountpoint]).split()
        return f"the host's {' '.join(reversed(source))} under {self.mountpoint}"

    def trim(self):
        pass

    def close(self):
        pass


def remove_stale(parent="/var/tmp"):
    """Removes what benches that died without cleaning up (SIGKILL, a crash) left of their
    scratch filesystems: the processes still working in one, its mounts, its loop device and its
    backing file. A scratch filesystem is stale when the bench named in it is gone."""
    for name in os.listdir(parent):
        match = re.fullmatch(r"lpb-(\d+)-[A-Za-z0-9_]+(\.img)?", name)
        if not match or _alive(int(match.group(1))):
            continue
        mountpoint = os.path.join(parent, name.removesuffix(".img"))
        kill_matching(mountpoint)
        _dismantle(mountpoint)


def _dismantle(mountpoint):
    """Unmounts a scratch filesystem and everything below it, detaches its loop devices and
    deletes its backing file and mount directory; what is already gone is skipped."""
    unmount_below(mountpoint)
    image = mountpoint + ".img"
    attached = subprocess.run(["losetup", "--noheadings", "--output", "NAME", "--associated", image],
                              capture_output=True, text=True).stdout.split()
    for device in attached:
        subprocess.run(["losetup", "-d", device], capture_output=True)
    if os.path.exists(image):
        os.remove(image)
    if os.path.isdir(mountpoint) and not os.path.ismount(mountpoint):
        subprocess.run(["rm", "-rf", "--one-file-system", mountpoint], capture_output=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def has_journal(device):
    features = run(["dumpe2fs", "-h", device], timeout=60)
    return any(line.startswith("Filesystem features:") and "has_journal" in line.split()
               for line in features.splitlines())


def _bytes(size):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
