"""The service of seed 002: render reports (through a template cache) and serve /health."""

import http.server
import signal
import sys
import tempfile

import reportgen


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # healthy means a report renders (cache read or written) and scratch space works
        try:
            body = reportgen.render("report.txt", title="health", pages=1).encode()
            with tempfile.NamedTemporaryFile() as scratch:
                scratch.write(body)
            code = 200 if self.path == "/health" else 404
        except OSError as exc:
            body, code = f"{exc}\n".encode(), 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # the healthcheck polls; keep the log for what matters


if __name__ == "__main__":
    # PID 1 gets no default action for SIGTERM: without this, `docker stop` waits 10 s to kill
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # render once at start: a cache that cannot be written stops the service here, loudly
    reportgen.render("report.txt", title="startup", pages=0)
    print(f"template-cache: templates cached in {reportgen.cache_dir()}", flush=True)
    http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()  # noqa: S104
