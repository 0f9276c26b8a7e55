#!/usr/bin/env python3
"""parallel-hash.py DIR [THREADS]

Hashes every regular file under DIR with THREADS concurrent readers (default 32) and prints
"<sha256> <relative path>" lines, sorted. Used to check that concurrent first reads of a lazy
mount return exactly the bytes of the eager tree.
"""
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 16)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def main():
    root = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    paths = sorted(files(root))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        sums = list(pool.map(digest, paths))
    for path, s in sorted(zip(paths, sums), key=lambda x: x[0]):
        print(s, repr(os.path.relpath(path, root)))


if __name__ == "__main__":
    main()
