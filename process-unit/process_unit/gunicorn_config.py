"""gunicorn settings for a processing unit: one process, since it runs one job at a time (also `python:process_unit.gunicorn_config`)."""
import os
import signal
import threading

bind = f"{os.environ.get('NIAS_HOST', '127.0.0.1')}:{os.environ.get('NIAS_UNIT_PORT', '8090')}"
worker_class = "gthread"
workers = 1
threads = 8
timeout = int(os.environ.get("NIAS_WEB_TIMEOUT_S", "30"))
control_socket_disable = True  # several gunicorns share one host; none needs the control socket
graceful_timeout = int(float(os.environ.get("NIAS_STOP_GRACE_S", "20"))) + 10


def _runner(worker):
    """The unit's runner; None when the worker never loaded the app (it failed to boot)."""
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("runner")


def post_worker_init(worker):
    """On SIGTERM, start the job's grace period at once: finish within NIAS_STOP_GRACE_S or hand it back."""
    runner = _runner(worker)
    if runner is None:
        return
    stop_worker = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        threading.Thread(target=runner.shutdown, args=(runner.settings.stop_grace_s,), daemon=True).start()
        stop_worker(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server, worker):
    runner = _runner(worker)
    if runner is not None:
        runner.shutdown(runner.settings.stop_grace_s)
