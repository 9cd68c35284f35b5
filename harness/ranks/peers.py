"""Shutting a rank's peer connections: gloo's missing abort.

A rank that leaves a test early (failed, skipped, timed out) must not leave its
peers blocked in a collective until the collective timeout. Destroying the
process group does not close its sockets while meshes or caches still hold it,
and gloo cannot abort; shutting the connections does what the rank's exit
would, and the peers' collectives fail at once.
"""

from __future__ import annotations

import os


def shut_peer_connections(keep_port: int) -> int:
    """Shut this process's established TCP connections, except those on ``keep_port``."""
    import socket

    sockets: dict[str, int] = {}
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                sockets[target[8:-1]] = int(fd)
    except OSError:  # no /proc: not Linux
        return 0
    shut = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
            if inode not in sockets or state != "01" or keep_port in ports:  # 01: established
                continue
            try:
                with socket.socket(fileno=os.dup(sockets[inode])) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
                shut += 1
            except OSError:
                pass
    return shut
