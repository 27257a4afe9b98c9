#!/usr/bin/env python3
"""Memory per idle connection: opens N connections to a ringlock on 127.0.0.1, sends one
GET /health on each and reads the answer, then reports the growth of the server's resident set
per connection, and checks that a new client is still served.

    python3 loadtest/idle_connections.py PORT N SERVER_PID

Needs N + a few file descriptors (ulimit -n)."""
import socket
import sys
import time

port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if not 0 < n <= 60000:
    sys.exit("N must be from 1 to 60000 (one source address, loopback only)")


def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


before = rss_kib()
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for c in conns:
    c.sendall(b"GET /health HTTP/1.1\r\n\r\n")
for c in conns:
    answer = b""
    while not answer.endswith(b"OK"):
        chunk = c.recv(4096)
        if not chunk:
            sys.exit("a connection closed before its answer")
        answer += chunk
time.sleep(1.5)
after = rss_kib()
probe = socket.create_connection(("127.0.0.1", port))
probe.sendall(b"GET /health HTTP/1.1\r\n\r\n")
status = probe.recv(100).split(b"\r\n")[0].decode()
print(f"{n} idle connections: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
      f"{(after - before) * 1024 / n:,.0f} bytes per connection; a new client got: {status}")
