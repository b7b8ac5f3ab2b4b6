"""gunicorn settings for the backend. gthread workers keep heartbeating the arbiter from their
main loop while request threads read a slow upload, so no upload is cut by `timeout`."""
import os

bind = f"{os.environ.get('NIAS_HOST', '127.0.0.1')}:{os.environ.get('NIAS_PORT', '8080')}"
worker_class = "gthread"
workers = 1  # the job store's writers and the event recorder live in one process
threads = int(os.environ.get("NIAS_WEB_THREADS", "64"))  # live pages hold one each
timeout = int(os.environ.get("NIAS_WEB_TIMEOUT_S", "30"))
control_socket_disable = True  # several gunicorns share one host; none needs the control socket
graceful_timeout = 10
keepalive = 5
accesslog = None
