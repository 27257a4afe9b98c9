#!/usr/bin/env python3
"""The list flood: with LOCKS locks held, CLIENTS clients each pipeline CALLS
`GET /locks?limit=1000` and never read. Reports how much the server's resident set grew (its
peak while the clients wait), then closes the clients and reports how long a new `GET /health`
took to be answered. Exits 1 if the growth reaches 128 MiB or the answer took a second.

    python3 loadtest/list_flood.py PORT SERVER_PID SECRET [LOCKS CLIENTS CALLS]

Defaults: 3,000 locks, 16 clients, 1,024 calls each (issue 13's numbers). Traffic to
127.0.0.1 only; bounded in time (about 20 s). The locks it takes are released at the end."""
import socket
import sys
import threading
import time

port, pid, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
locks, clients, calls = (int(a) for a in (sys.argv[4:7] or (3000, 16, 1024)))
if not (0 < locks <= 100_000 and 0 < clients <= 256 and 0 < calls <= 100_000):
    sys.exit("LOCKS up to 100000, CLIENTS up to 256, CALLS up to 100000")
ADDR = ("127.0.0.1", port)
WATCH_S = 8.0


def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    sys.exit("no such process")


def post(path, body):
    return (f"POST {path} HTTP/1.1\r\nX-LOCKSERVER-SECRET: {secret}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def read_answers(sock, n):
    """Reads n answers; returns their status codes."""
    buf, statuses = b"", []
    while len(statuses) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(1 << 16)
            if not chunk:
                sys.exit(f"closed after {len(statuses)} answers")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        while len(buf) < length:
            buf += sock.recv(1 << 16)
        buf = buf[length:]
        statuses.append(int(head[9:12]))
    return statuses


def pipelined(requests):
    """Sends requests on one connection and reads every answer."""
    with socket.create_connection(ADDR, timeout=30) as s:
        result = []
        reader = threading.Thread(target=lambda: result.extend(read_answers(s, len(requests))))
        reader.start()
        s.sendall(b"".join(requests))
        reader.join()
        return result


names = [f"flood/{i:06}" for i in range(locks)]
statuses = pipelined([post("/acquire", f'{{"resource":"{n}","owner":"flood"}}') for n in names])
if statuses.count(200) != locks:
    sys.exit(f"took {statuses.count(200)} of {locks} locks: are some held already?")
time.sleep(1.0)
before = rss_kib()

list_call = f"GET /locks?limit=1000 HTTP/1.1\r\nX-LOCKSERVER-SECRET: {secret}\r\n\r\n".encode()
flood = []
sent = [0] * clients


def send_all(i, s):
    # The server stops reading once a client owes it enough: sendall then blocks until the
    # socket closes, which is the point.
    try:
        s.sendall(list_call * calls)
        sent[i] = calls
    except OSError:
        pass


for i in range(clients):
    s = socket.create_connection(ADDR)
    flood.append(s)
    threading.Thread(target=send_all, args=(i, s), daemon=True).start()
peak, deadline = before, time.monotonic() + WATCH_S
while time.monotonic() < deadline:
    peak = max(peak, rss_kib())
    time.sleep(0.05)
# Leave: closing with unread answers resets each connection.
for s in flood:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
left = time.monotonic()
while True:
    try:
        with socket.create_connection(ADDR, timeout=5) as probe:
            probe.sendall(b"GET /health HTTP/1.1\r\n\r\n")
            if probe.recv(100).startswith(b"HTTP/1.1 200 OK"):
                break
    except OSError:
        pass
    if time.monotonic() - left > 10:
        sys.exit("no answer to /health within 10 s")
health_ms = (time.monotonic() - left) * 1000
time.sleep(1.0)
after = rss_kib()
pipelined([post("/release", f'{{"resource":"{n}","owner":"flood"}}') for n in names])

growth = (peak - before) / 1024
print(f"{locks} locks held, {clients} clients x {calls} pipelined GET /locks?limit=1000 never read "
      f"({sum(sent)} of the {clients * calls} calls fully sent): RSS {before / 1024:.1f} MiB -> "
      f"{peak / 1024:.1f} MiB at the peak (+{growth:.1f} MiB), {after / 1024:.1f} MiB a second after "
      f"the clients left; /health answered {health_ms:.0f} ms after they left")
sys.exit(0 if growth < 128 and health_ms < 1000 else 1)
