"""A stand-in for the OCR service of seed 003: fetch a model through tempfile, serve /health.

Surya stages every model file in tempfile.TemporaryDirectory() and then shutil.move()s it
into the cache. With TMPDIR unset the staging lands on the small /tmp tmpfs and a model
larger than it fails with ENOSPC; with TMPDIR on the cache volume it stages on disk and
the move is a rename on the same filesystem.
"""

import http.server
import os
import shutil
import signal
import sys
import tempfile

CACHE = os.environ.get("HF_HOME", "/app/cache")
MODEL = os.path.join(CACHE, "datalab", "models", "text_recognition", "model.safetensors")
# larger than the /tmp tmpfs in compose.yaml, as Surya's 1.34 GB model was to its 512 MB
MODEL_MB = int(os.environ.get("MODEL_MB", "48"))


def fetch_model() -> str:
    if os.path.exists(MODEL):
        return "already cached"
    chunk = b"\0" * (1 << 20)
    with tempfile.TemporaryDirectory() as staging:
        part = os.path.join(staging, "model.safetensors")
        with open(part, "wb") as fh:
            for _ in range(MODEL_MB):
                fh.write(chunk)
        os.makedirs(os.path.dirname(MODEL), exist_ok=True)
        shutil.move(part, MODEL)
    return f"downloaded {MODEL_MB} MiB through {tempfile.gettempdir()}"


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            # every OCR job writes scratch files; a health check that cannot is a lie
            with tempfile.NamedTemporaryFile() as scratch:
                scratch.write(b"ok")
            ok = self.path == "/health" and os.path.exists(MODEL)
        except OSError:
            ok = False
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"unhealthy\n")

    def log_message(self, *args: object) -> None:
        pass  # the healthcheck polls; keep the log for what matters


if __name__ == "__main__":
    # PID 1 gets no default action for SIGTERM: without this, `docker stop` waits 10 s to kill
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"ocr-service: model {fetch_model()} -> {MODEL}", flush=True)
    http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Health).serve_forever()  # noqa: S104
