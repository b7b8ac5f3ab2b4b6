"""gunicorn settings for the backend. gthread workers keep heartbeating the arbiter from their
main loop while request threads read a slow upload, so no upload is cut by `timeout`; the
backend's own gthread worker (backend/web_worker.py) also bounds how long a request head may take
and serves event streams off the thread pool, so slow clients cannot hold every thread."""
import os
import signal

bind = f"{os.environ.get('NIAS_HOST', '127.0.0.1')}:{os.environ.get('NIAS_PORT', '8080')}"
worker_class = "backend.web_worker.WebWorker"
workers = 1  # the job store's writers and the event recorder live in one process
threads = int(os.environ.get("NIAS_WEB_THREADS", "64"))  # requests under way; event streams hold none
timeout = int(os.environ.get("NIAS_WEB_TIMEOUT_S", "30"))
control_socket_disable = True  # several gunicorns share one host; none needs the control socket
graceful_timeout = int(os.environ.get("NIAS_WEB_GRACEFUL_S", "10"))  # for requests under way at a stop
keepalive = 5
accesslog = None


def post_worker_init(worker):
    """On SIGTERM, end the live event streams first: each open one would hold the graceful stop
    for the whole graceful_timeout (the pages' EventSource reconnects to the next backend)."""
    from backend.live import feed

    stop = worker.handle_exit

    def handle_exit(signum, frame):
        feed.close()
        stop(signum, frame)

    signal.signal(signal.SIGTERM, handle_exit)
