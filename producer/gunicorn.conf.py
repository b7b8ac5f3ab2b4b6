"""gunicorn settings for the producer: one process, so one AMQP connection."""
import os

bind = f"{os.environ.get('NIAS_HOST', '127.0.0.1')}:{os.environ.get('NIAS_PRODUCER_PORT', '8081')}"
worker_class = "gthread"
workers = 1
threads = 8
timeout = int(os.environ.get("NIAS_WEB_TIMEOUT_S", "30"))
control_socket_disable = True  # several gunicorns share one host; none needs the control socket
graceful_timeout = 10
