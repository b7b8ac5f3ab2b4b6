"""A git server on 127.0.0.1 for tests: bare repositories under a folder, served over smart HTTP
by `git http-backend` (git's own CGI program), as a lab's git server would serve them."""
from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": "lab", "GIT_AUTHOR_EMAIL": "lab@example.org",
           "GIT_COMMITTER_NAME": "lab", "GIT_COMMITTER_EMAIL": "lab@example.org"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


class GitServer:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the names http.server calls
                server.serve(self)

            def do_POST(self):  # noqa: N802
                server.serve(self)

            def log_message(self, *_args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": request.command, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": request.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "REMOTE_ADDR": "127.0.0.1", "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
               "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", "")}
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def repository(self, name: str, commits: list[dict[str, str]], tags: dict[str, int] | None = None) -> list[str]:
        """A bare repository `name` with one commit per files dict (each the whole tree); tags name
        commits by index. Returns the commit ids, oldest first."""
        work = self.root / f"{name}.work"
        git("init", "-q", "-b", "main", str(work))
        ids = []
        for files in commits:
            for existing in work.iterdir():
                if existing.name != ".git":
                    subprocess.run(["rm", "-rf", str(existing)], check=True)
            for relative, text in files.items():
                (work / relative).parent.mkdir(parents=True, exist_ok=True)
                (work / relative).write_text(text)
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", f"commit {len(ids) + 1}", cwd=work)
            ids.append(git("rev-parse", "HEAD", cwd=work))
        for tag, index in (tags or {}).items():
            git("tag", tag, ids[index], cwd=work)
        git("clone", "-q", "--bare", str(work), str(self.root / f"{name}.git"))
        return ids

    def stop(self) -> None:
        self.httpd.shutdown()
