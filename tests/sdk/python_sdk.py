"""Drives the reference server's Python SDK (lockserver-client 0.1.3 from PyPI, unmodified)
against the server at LOCKSERVER_ADDR, and prints what it saw, one `name=value` per line."""
import os
import threading
import time

import requests
from lockserver_client import LockserverClient

addr = os.environ["LOCKSERVER_ADDR"]
secret = os.environ["LOCKSERVER_SECRET"]
res = "py-%d" % os.getpid()
a = LockserverClient(addr=addr, owner="py-a", secret=secret)
b = LockserverClient(addr=addr, owner="py-b", secret=secret)
seen = {}

seen["acquire_free"] = a.acquire(res, blocking=False)
seen["nonblocking_held"] = b.acquire(res, blocking=False)


def release_later():
    time.sleep(0.5)
    a.release(res)


releaser = threading.Thread(target=release_later)
releaser.start()
start = time.monotonic()
seen["blocking_after_release"] = b.acquire(res)
seen["blocking_waited"] = time.monotonic() - start >= 0.4
releaser.join()

try:
    a.release(res)
    seen["release_by_non_holder"] = "no error"
except requests.HTTPError as e:
    seen["release_by_non_holder"] = e.response.status_code
b.release(res)

seen["expire_acquire"] = a.acquire(res + "-ttl", blocking=False, expire=1)
seen["expire_held"] = b.acquire(res + "-ttl", blocking=False)
time.sleep(1.3)
seen["expire_freed"] = b.acquire(res + "-ttl", blocking=False)

try:
    LockserverClient(addr=addr, owner="py-x", secret="wrong").acquire(res + "-x", blocking=False)
    seen["wrong_secret"] = "no error"
except requests.HTTPError as e:
    seen["wrong_secret"] = e.response.status_code

# Configured from the environment only, as the SDK documents.
env = LockserverClient()
seen["env_client"] = env.owner == os.environ["LOCKSERVER_OWNER"] and env.acquire(res + "-env", blocking=False)

for name, value in seen.items():
    print("%s=%s" % (name, value))
