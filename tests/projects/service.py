"""A service that dies at start, as the seeds' services died late, unless it can write:
a temp file where tempfile puts it, and a file in each cache dir its environment names.
It prints what it wrote, then serves nothing until stopped."""

import os
import signal
import sys
import tempfile

fd, path = tempfile.mkstemp(prefix="service-")
os.write(fd, b"written by the service")
os.close(fd)
print(f"temp {path}", flush=True)
for var in ("XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME"):
    d = os.environ.get(var)
    if d:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "service-cache"), "w") as fh:
            fh.write(var)
        print(f"cache {var} {d}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pause()
