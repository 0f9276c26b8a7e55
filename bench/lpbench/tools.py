"""Process, timing and kernel helpers shared by the bench's scenarios."""
import os
import subprocess
import time

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
FIXTURES = os.path.join(REPO, "Tests", "Fixtures", "bin")


def run(argv, timeout=1800, **kwargs):
    """Runs argv; raises with its output on failure."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-600:]}")
    return result.stdout


def output(argv, timeout=600, **kwargs):
    """Runs argv and returns stdout and stderr together; raises on failure."""
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} failed ({result.returncode}): {result.stdout.strip()[-600:]}")
    return result.stdout


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def now():
    return time.monotonic()


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pids_matching(pattern):
    result = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


def kill_matching(pattern, timeout=10):
    subprocess.run(["pkill", "-KILL", "-f", "--", pattern], capture_output=True)
    wait_for(lambda: not pids_matching(pattern), timeout)


def process_usage(pid):
    """(peak RSS in KiB, CPU seconds) of a live process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return hwm, (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def mounts_below(path):
    path = path.rstrip("/")
    found = []
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1].encode().decode("unicode_escape")
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return sorted(found, key=lambda p: -p.count("/"))


def unmount_below(path):
    for point in mounts_below(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
