#!/usr/bin/env python3
"""treedump.py - canonical, sorted, line-per-entry description of a tree.

Usage:
  treedump.py DIR

One line per entry, sorted by the raw bytes of the relative path; the root
is the path '.'.  Symlinks are never followed.  Fields, separated by a
single space, in this order (absent fields are omitted):

  PATH          repr() of the path decoded with surrogateescape (undecodable
                bytes show up as '\\udcXX'); './' prefix, e.g. './etc/passwd'
  TYPE          f (regular) d (dir) l (symlink) c (char dev) b (block dev)
                p (fifo) s (socket)
  mode=NNNN     permission bits incl. setuid/setgid/sticky, 4-digit octal
  uid=N gid=N
  size=N        regular files only
  sha256=HEX    regular files only
  target=REPR   symlinks only: repr() of the link target
  dev=MAJ,MIN   char/block devices only
  hardlink=REPR regular files with st_nlink > 1: the smallest (byte order)
                path inside DIR sharing the same (st_dev, st_ino)
  xattrs={...}  all extended attributes except trusted.overlay.*, sorted by
                name, each name=0xHEX of the raw value; omitted if none
  mtime=N       whole seconds (floor); not printed for the root

The tree is walked with directory file descriptors (openat-style), so total
path length is not limited by PATH_MAX.  Exit status is 0 on success, 1 on
any error (message on stderr).
"""

import errno
import hashlib
import os
import re
import stat
import sys

SKIP_XATTR_PREFIX = "trusted.overlay."
SAFE_NAME = re.compile(r"[A-Za-z0-9._@+-]+")


def ftype(mode):
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISCHR(mode):
        return "c"
    if stat.S_ISBLK(mode):
        return "b"
    if stat.S_ISFIFO(mode):
        return "p"
    if stat.S_ISSOCK(mode):
        return "s"
    return "?"


def show(b):
    """repr of a bytes path/target, readable for valid UTF-8."""
    return repr(b.decode("utf-8", "surrogateescape"))


def xattrs_of(dirfd, name):
    """xattrs of entry `name` in directory `dirfd` (of the directory itself
    if name is None), without following a final symlink.  The
    /proc/self/fd/N magic link resolves the directory, so the path stays
    short however deep the tree is."""
    if name is None:
        target, follow = dirfd, True
    else:
        target, follow = b"/proc/self/fd/%d/" % dirfd + name, False
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    out = []
    for n in sorted(names, key=os.fsencode):
        if n.startswith(SKIP_XATTR_PREFIX):
            continue
        v = os.getxattr(target, n, follow_symlinks=follow)
        out.append((n, v))
    return out


def show_xattr_name(n):
    if SAFE_NAME.fullmatch(n):
        return n
    return repr(n)


def sha256_of(dirfd, name):
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC,
                 dir_fd=dirfd)
    try:
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def walk(root):
    """Yield (relpath_bytes, stat_result, dirfd, name_or_None) for every
    entry.  dirfd is only valid during the yield."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    rootfd = os.open(root, flags)
    try:
        st = os.stat(rootfd)
        yield b".", st, rootfd, None
        yield from walk_dir(rootfd, b".")
    finally:
        os.close(rootfd)


def walk_dir(dirfd, rel):
    names = sorted(os.fsencode(n) for n in os.listdir(dirfd))
    for name in names:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        path = rel + b"/" + name
        yield path, st, dirfd, name
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                          | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                yield from walk_dir(sub, path)
            finally:
                os.close(sub)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: treedump.py DIR\n")
        return 2
    root = argv[1]
    entries = []
    inodes = {}
    for path, st, dirfd, name in walk(root):
        mode = st.st_mode
        t = ftype(mode)
        fields = [show(path), t, "mode=%04o" % stat.S_IMODE(mode),
                  "uid=%d" % st.st_uid, "gid=%d" % st.st_gid]
        if t == "f":
            fields.append("size=%d" % st.st_size)
            fields.append("sha256=" + sha256_of(dirfd, name))
        elif t == "l":
            fields.append("target=" + show(os.readlink(name, dir_fd=dirfd)))
        elif t in ("c", "b"):
            fields.append("dev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        key = None
        if t == "f" and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            inodes.setdefault(key, []).append(path)
        xa = xattrs_of(dirfd, name)
        tail = []
        if xa:
            tail.append("xattrs={" + ",".join(
                "%s=0x%s" % (show_xattr_name(n), v.hex())
                for n, v in xa) + "}")
        if name is not None:
            tail.append("mtime=%d" % (st.st_mtime_ns // 1_000_000_000))
        entries.append((path, fields, key, tail))

    out = []
    for path, fields, key, tail in sorted(entries, key=lambda e: e[0]):
        line = list(fields)
        if key is not None:
            line.append("hardlink=" + show(min(inodes[key])))
        line.extend(tail)
        out.append(" ".join(line))
    data = "".join(line + "\n" for line in out)
    sys.stdout.buffer.write(data.encode("utf-8", "backslashreplace"))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except OSError as e:
        sys.stderr.write("treedump.py: %s\n" % e)
        sys.exit(1)
