"""A stand-in for seed 000's export packager: download into a NamedTemporaryFile, then unzip.

As uid 1000 on a read-only root filesystem, none of tempfile's candidates (/tmp, /var/tmp,
/usr/tmp, the working dir) was writable, and every export failed with "No usable temporary
directory found". TMPDIR names a dir on a volume that the volinit init service prepared.
"""

import http.server
import io
import json
import signal
import sys
import tempfile
import zipfile


def package(download: bytes) -> list[str]:
    """The seed's code path: spool the export to a named temp file, then read it as a ZIP."""
    with tempfile.NamedTemporaryFile(suffix=".zip") as spool:
        spool.write(download)
        spool.flush()
        with zipfile.ZipFile(spool.name) as archive:
            return archive.namelist()


def sample_export() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("entry.json", json.dumps({"entry_id": "etr_example"}))
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(200, {"files": package(body)})

    def do_GET(self) -> None:
        # healthy means an export can be packaged now, not merely that the port answers
        try:
            ok = self.path == "/health" and package(sample_export()) == ["entry.json"]
        except OSError:
            ok = False
        self.reply(200 if ok else 503, {"ok": ok})

    def reply(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass  # the healthcheck polls; keep the log for what matters


if __name__ == "__main__":
    # PID 1 gets no default action for SIGTERM: without this, `docker stop` waits 10 s to kill
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # fail at start, loudly, rather than on the first export as the seed did
    print(f"web: temp files go to {tempfile.gettempdir()}", flush=True)
    http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()  # noqa: S104
