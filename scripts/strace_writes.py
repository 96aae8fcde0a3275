#!/usr/bin/env python3
"""Sums what a traced malog run wrote into files under a folder.

Usage: strace_writes.py FOLDER TRACE_FILE...

The trace files come from `strace -ff -y -e trace=write,pwrite64,writev,pwritev,
pwritev2,copy_file_range -o PREFIX` (one file per thread, so no call is split
across lines by another thread). Prints two numbers: bytes written through user
space (write and friends) and bytes copied inside the kernel (copy_file_range),
counting only calls whose destination descriptor is a file under FOLDER.
"""
import re
import sys

CALL = re.compile(r"^(write|pwrite64|writev|pwritev2?|copy_file_range)\((.*)\)\s+=\s+(\d+)")
FD = re.compile(r"\d+<([^>]*)>")


def main():
    folder, traces = sys.argv[1], sys.argv[2:]
    user = kernel = 0
    for path in traces:
        with open(path, errors="replace") as f:
            for line in f:
                m = CALL.match(line)
                if not m:
                    continue
                name, args, result = m.group(1), m.group(2), int(m.group(3))
                fds = FD.findall(args)
                if not fds:
                    continue
                # copy_file_range(fd_in, off_in, fd_out, ...): the second fd is the target.
                target = fds[1] if name == "copy_file_range" and len(fds) > 1 else fds[0]
                if not target.startswith(folder):
                    continue
                if name == "copy_file_range":
                    kernel += result
                else:
                    user += result
    print(user, kernel)


if __name__ == "__main__":
    main()
