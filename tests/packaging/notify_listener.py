#!/usr/bin/env python3
"""A stand-in for systemd's notify socket: binds a datagram socket at argv[1] and appends every
message it receives to argv[2], one per line (newlines inside a message become '|'), until killed."""
import socket
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        data = sock.recv(4096)
        out.write(data.decode("utf-8", "replace").replace("\n", "|") + "\n")
