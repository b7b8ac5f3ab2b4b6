"""The processing unit's Flask API: start a run, follow it, report health. One job at a time."""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nias.amqp import EventSink
from nias.errors import JobNotFound
from nias.logs import configure_logging
from nias.messages import ControlMessage, JobMessage
from nias.settings import Settings, load_settings
from nias.settings import require
from nias.health import Health, ServiceKind
from nias.web import folder_writable, health_response, install_error_handlers, require_internal_token, require_scraper

from process_unit.environments import EnvironmentCache
from process_unit.host_facts import read_host_facts
from process_unit.isolation import Isolation
from process_unit.runner import OWN_FILES, Runner
from process_unit.sandbox import Sandbox
from process_unit.slurm import Slurm
from process_unit.slurm_runner import SlurmRunner

logger = logging.getLogger(__name__)

MAX_WAIT_S = 60
RUN_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}-[0-9]+")  # <job id>-<attempt>, as the runner names them


def remove_leftover_work(work_dir: Path, keep: frozenset[str] = frozenset()) -> list[str]:
    """Remove the work folders of attempts a killed unit left behind, but those in `keep` (a Slurm
    unit's recorded batch jobs, which it adopts): at start this unit runs nothing else."""
    removed = []
    own = work_dir / OWN_FILES
    if own.is_dir() and not own.is_symlink():
        for folder in sorted(own.iterdir()):
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink(missing_ok=True)
                removed.append(folder.name)
    for folder in sorted(work_dir.iterdir()):
        if (RUN_FOLDER.fullmatch(folder.name) and folder.name not in keep and folder.is_dir()
                and not folder.is_symlink()):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        logger.warning("Removed %s work folder(s) of attempts this unit did not finish: %s",
                       len(removed), ", ".join(removed[:20]))
    return removed


def build_runner(settings: Settings) -> Runner:
    settings.unit_work_dir.mkdir(parents=True, exist_ok=True)
    environments = EnvironmentCache(settings.environments_dir, settings.uv, settings.job_python,
                                    bool(settings.build_sdists), max_age_s=settings.env_max_age_days * 86400,
                                    keep_old_s=settings.job_timeout_s + settings.max_pause_s + 3600)
    facts = read_host_facts(settings.job_python)
    if settings.executor == "slurm":
        runner = SlurmRunner(settings, EventSink(settings), environments, Slurm(), facts=facts)
        remove_leftover_work(settings.unit_work_dir, frozenset(record.folder for record in runner.journal.records()))
        runner.adopt_recorded()
        return runner
    remove_leftover_work(settings.unit_work_dir)
    sandbox = Sandbox(settings)
    sandbox.check_reachable(settings.unit_work_dir, settings.environments_dir)
    return Runner(settings, EventSink(settings), environments, sandbox, Isolation.for_unit(settings, sandbox),
                  facts=facts)


def _can_work(settings: Settings) -> dict[str, bool]:
    """What a run needs on this host: its scratch space and the environment cache it builds into
    (with uv and the job interpreter). The job's files come from the backend over HTTP."""
    return {
        "work_dir": folder_writable(settings.unit_work_dir),
        "environments": folder_writable(settings.environments_dir),
        "uv": bool(shutil.which(settings.uv)),
        "python": os.access(settings.job_python, os.X_OK),
        **({"sbatch": bool(shutil.which("sbatch"))} if settings.executor == "slurm" else {}),
    }


def create_app(settings: Settings | None = None, runner: Runner | None = None) -> Flask:
    settings = settings or load_settings()
    runner = runner or build_runner(settings)
    app = Flask(__name__)
    app.extensions["runner"] = runner
    install_error_handlers(app)
    require_internal_token(app, settings, ("/api/",))

    @app.post("/api/runs")
    def start_run():
        message = JobMessage.decode(request.get_data())
        attempt = int(request.args.get("attempt", "1"))
        run = runner.start(message, attempt)
        return jsonify(run.to_dict()), 202

    @app.get("/api/runs/current")
    def current_run():
        run = runner.current()
        return jsonify(run.to_dict() if run else {"job_id": None})

    @app.get("/api/runs/<job_id>")
    def get_run(job_id: str):
        """A run; `?wait_s=N` holds the answer until it is done (or N seconds pass)."""
        run = runner.get(job_id)
        if run is None:
            raise JobNotFound(f"This unit has no run of job {job_id}.")
        wait_s = min(float(request.args.get("wait_s", "0") or 0), MAX_WAIT_S)
        if wait_s > 0:
            run.done.wait(wait_s)
        return Response(run.status().encode(), mimetype="application/json")

    @app.post("/api/control")
    def control_run():
        """Pause, resume or cancel the current run; `applied` is false if this unit does not hold it."""
        message = ControlMessage.decode(request.get_data())
        return jsonify({"applied": runner.control(message)})

    @app.get("/metrics")
    def metrics():
        """Busy seconds, attempts by outcome, each job's CPU time and peak memory (for the internal token)."""
        require_scraper(settings)
        return Response(generate_latest(runner.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz():
        return health_response(Health(ServiceKind.UNIT, settings.unit_name, _can_work(settings),
                                      runner.busy_with(), runner.sandbox_mode, settings.instance_id))

    return app


def create_served_app() -> Flask:
    settings = load_settings()
    configure_logging(settings.log_level, settings.unit_name)
    require(settings, "internal_token")
    app = create_app(settings)
    runner = app.extensions["runner"]
    runner.events.start_keepalive()
    runner.start_presence()
    logger.info("Processing unit %s ready (work dir %s)", settings.unit_name, settings.unit_work_dir)
    return app
