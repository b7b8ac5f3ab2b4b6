"""Jobs attacking each other and the server, each run with bubblewrap and without it: a daemon that
outlives its job, reads of another job's files, a planted module in the shared environment, signals
across jobs, memory beyond the job's limit, forged events, a stolen job message, and a second
deployment starting on the same host. Every attack fails, and the attacked jobs end as their own
code says."""
from __future__ import annotations

import uuid
import zipfile
from pathlib import Path

import pika
import pytest
import requests

from nias.amqp import Topology
from nias.client import ApiError, NiasClient
from nias.messages import JobEvent
from tests.e2e.test_accounts import new_user, token_for
from tests.support.host_processes import processes_of_uid, processes_with_argument, read_process, still_running
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, wait_until

UID_RANGE = range(61000, 62000)  # NIAS_JOB_UID_RANGE's default
TIMEOUT_S = 120

# Runs until the test puts a file named `release` in its project folder (at most a minute).
HOLD = (
    "import os, time\n"
    "for _ in range(600):\n"
    "    if os.path.exists('release'):\n"
    "        break\n"
    "    time.sleep(0.1)\n"
)


@pytest.fixture(scope="module", params=["bwrap", "off"])
def stack(request, tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp(f"isolation-{request.param}"), units=2, NIAS_SANDBOX=request.param,
                    NIAS_REDISPATCH_S="2", NIAS_JOB_TIMEOUT_S=str(TIMEOUT_S), NIAS_KILL_GRACE_S="2") as stack:
        yield stack


@pytest.fixture(scope="module")
def alice(stack) -> NiasClient:
    return NiasClient(stack.url, token=token_for(stack, *new_user(stack)))


@pytest.fixture(scope="module")
def bob(stack) -> NiasClient:
    return NiasClient(stack.url, token=token_for(stack, *new_user(stack)))


@pytest.fixture(autouse=True)
def idle_units(stack):
    """Each test starts with both units idle, and leaves nothing running behind it."""
    wait_for_idle_units(stack)
    yield
    for state in ("queued", "running", "paused"):
        for job in stack.client.jobs(state=state, per_page=100)["jobs"]:
            try:
                stack.client.set_state(job["id"], "cancelled")
            except ApiError as exc:
                if exc.status != 409:  # 409: it ended between the listing and the cancel
                    raise
    wait_for_idle_units(stack)


def wait_for_idle_units(stack: LocalStack) -> None:
    def idle(index: int) -> bool:
        try:
            health = requests.get(f"{stack.unit_url(index)}/healthz", headers=stack.internal_headers, timeout=2)
        except requests.RequestException:
            return False
        return health.ok and health.json().get("busy") is None

    wait_until(lambda: all(idle(index) for index in range(1, stack.units + 1)), timeout_s=60,
               message="both units idle")


def submit(client: NiasClient, tmp_path: Path, code: str, extra: dict | None = None, **fields) -> dict:
    project = zip_entries(tmp_path / f"{uuid.uuid4().hex[:8]}.zip", {"code.py": code, **(extra or {})})
    return client.submit(project, **fields)


def running(client: NiasClient, job: dict, says: str = "") -> dict:
    """The job once it runs on a unit (and its log holds `says`)."""
    return wait_until(lambda: (now := client.job(job["id"]))["state"] == "running" and now["unit"]
                      and says in client.log(job["id"]) and now, timeout_s=60, message=f"job {job['id']} running")


def project_dir(stack: LocalStack, job: dict) -> Path:
    return stack.data_dir / "work" / job["unit"] / f"{job['id']}-{job['attempts']}" / "project"


def release(stack: LocalStack, job: dict) -> None:
    """Let a HOLD job go on: the test (root) writes into its project folder."""
    (project_dir(stack, job) / "release").write_text("go")


def logged_number(log: str, label: str) -> int:
    return int(log.split(f"{label} ", 1)[1].split()[0])


def job_process(uid: int) -> int:
    """The host pid of the code.py run by `uid` (under bubblewrap, not the bwrap processes around it)."""
    pids = [p.pid for p in processes_of_uid(uid) if b"code.py" in p.argv and p.command != "bwrap"]
    assert len(pids) == 1, pids
    return pids[0]


def unit_uids(stack: LocalStack) -> set[int]:
    return {read_process(stack.service_pid(f"unit-{index}")).uid for index in range(1, stack.units + 1)}


# -- 1. a daemon that outlives its job -----------------------------------------------------------------
DAEMON_BODY = """
import os, sys, time
print("daemon pid", os.getpid(), flush=True)
for procs in ("memory", "pids", "freezer", "."):  # back to the top of each hierarchy, out of the job's group
    try:
        with open(f"/sys/fs/cgroup/{procs}/cgroup.procs", "w") as handle:
            handle.write(str(os.getpid()))
        print("ESCAPED to", procs, flush=True)
    except OSError as exc:
        print("stayed out of", procs, exc.__class__.__name__, flush=True)
while True:
    for path in (sys.argv[2], "output/daemon.txt"):
        with open(path, "a") as handle:
            handle.write(f"{time.time()}\\n")
    time.sleep(0.1)
"""


def daemon_code(marker: str, tmp_file: str) -> str:
    return f"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", {DAEMON_BODY!r}, {marker!r}, {tmp_file!r}])
    os._exit(0)
os.wait()
while not os.path.exists("output/daemon.txt"):
    time.sleep(0.05)
print("uid", os.getuid(), flush=True)
time.sleep(4)
"""


PROCESSES_OF_UID = """
import os
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        if os.stat(f"/proc/{pid}").st_uid == UID and state not in "ZX":  # a zombie has ended: only its pid is left
            found.append(pid)
    except OSError:
        pass
print("processes of the first job's uid:", found, flush=True)
print("uid", os.getuid(), flush=True)
"""


def test_a_daemon_that_left_its_session_ends_with_its_job_and_the_next_job_finds_nothing_of_it(
        stack, alice, bob, tmp_path):
    marker = f"nias-daemon-{uuid.uuid4().hex}"
    tmp_file = f"/tmp/{marker}.txt"
    try:
        job = running(alice, submit(alice, tmp_path, daemon_code(marker, tmp_file)), says="uid ")
        blocker = running(bob, submit(bob, tmp_path, HOLD))  # the other unit is busy: the next job goes here
        daemons = wait_until(lambda: processes_with_argument(marker), timeout_s=30, message="the daemon on the host")
        assert len(daemons) == 1
        daemon = daemons[0]
        log = alice.log(job["id"])
        first_uid = logged_number(log, "uid")
        assert daemon.uid == first_uid and first_uid in UID_RANGE
        if stack.env["NIAS_SANDBOX"] == "off":  # under bubblewrap it saw its pid in the job's pid namespace
            assert logged_number(log, "daemon pid") == daemon.pid

        done = alice.wait(job["id"], timeout_s=TIMEOUT_S)
        assert done["state"] == "succeeded", done
        assert not still_running(daemon), f"the daemon {daemon.pid} outlived its job"
        assert processes_of_uid(first_uid) == []
        result = zipfile.ZipFile(alice.result(job["id"], tmp_path / "daemon.zip"))
        assert result.read("daemon.txt")  # it did run and write, until the job ended
        assert "ESCAPED" not in alice.log(job["id"])

        after = bob.wait(submit(bob, tmp_path, PROCESSES_OF_UID.replace("UID", str(first_uid)))["id"],
                         timeout_s=TIMEOUT_S)
        assert after["state"] == "succeeded" and after["unit"] == job["unit"], after
        after_log = bob.log(after["id"])
        assert "processes of the first job's uid: []" in after_log, after_log
        assert logged_number(after_log, "uid") not in (first_uid, *unit_uids(stack))  # a uid of its own
        release(stack, blocker)
    finally:
        Path(tmp_file).unlink(missing_ok=True)


# -- 2. reading another job's files ---------------------------------------------------------------------
def secret_holder(secret: str) -> str:
    return (f"import os\nopen('output/secret.txt', 'w').write({secret!r})\n"
            "print('holding as uid', os.getuid(), flush=True)\n" + HOLD)


READER = """
import os
loot = []
for path in TARGETS:
    try:
        if os.path.isdir(path):
            got = repr(os.listdir(path))
        else:
            with open(path, "rb") as handle:
                got = handle.read(1 << 20).decode(errors="replace")
        print("READ", path, flush=True)
        loot.append(f"{path}: {got}")
    except OSError as exc:
        print("denied", path, exc.__class__.__name__, flush=True)
open("output/loot.txt", "w").write("\\n".join(loot))
print("reading done", flush=True)
"""


def test_a_job_cannot_read_another_running_jobs_folder_upload_or_the_backends_private_files(
        stack, alice, bob, tmp_path):
    secret = f"alice-secret-{uuid.uuid4().hex}"
    holder = running(alice, submit(alice, tmp_path, secret_holder(secret), {"data.txt": secret}), says="holding")
    holder_pid = job_process(logged_number(alice.log(holder["id"]), "holding as uid"))
    work = project_dir(stack, holder).parent
    data = stack.data_dir
    targets = [str(work), str(work / "project"), str(work / "project" / "data.txt"),
               str(work / "project" / "code.py"), str(work / "project" / "output"),
               str(work / "project" / "output" / "secret.txt"), str(data / "jobs" / holder["id"] / "upload.zip"),
               str(data / "private"), str(data / "private" / "nias.db"), str(data / "private" / "secret_key"),
               # the same files by way of the running job's process, and the services' environment
               f"/proc/{holder_pid}/cwd", f"/proc/{holder_pid}/cwd/data.txt", f"/proc/{holder_pid}/environ",
               *(f"/proc/{stack.service_pid(service)}/environ" for service in ("backend", "unit-1", "consumer-1"))]
    assert (work / "project" / "output" / "secret.txt").read_text() == secret  # they are there, for root
    reader = bob.wait(submit(bob, tmp_path, READER.replace("TARGETS", repr(targets)))["id"], timeout_s=TIMEOUT_S)
    assert reader["unit"] != holder["unit"]
    log = bob.log(reader["id"])
    assert reader["state"] == "succeeded" and "reading done" in log, (reader, log)
    for target in targets:  # refused, or not there at all (under bubblewrap)
        assert (f"denied {target} PermissionError" in log or f"denied {target} FileNotFoundError" in log
                or f"denied {target} ProcessLookupError" in log), f"{target} was readable:\n{log}"
    loot = zipfile.ZipFile(bob.result(reader["id"], tmp_path / "loot.zip")).read("loot.txt").decode()
    assert secret not in loot and secret not in log
    assert (data / "private" / "secret_key").read_text().strip() not in loot + log
    assert stack.env["NIAS_INTERNAL_TOKEN"] not in loot + log
    release(stack, holder)
    assert alice.wait(holder["id"], timeout_s=TIMEOUT_S)["state"] == "succeeded"


# Only inside the job's environment and the cache it came from: never a system file, whoever runs it.
PLANTER = """
import os, site, sys
plants = [os.path.join(folder, name) for folder in site.getsitepackages() if folder.startswith(sys.prefix + "/")
          for name in ("zz_planted.pth", "sitecustomize.py", "nias_job.py")]
plants.append(os.path.join(os.path.dirname(sys.prefix), ".uv-cache", "planted"))
for path in plants:
    try:
        with open(path, "a") as handle:
            handle.write("\\nimport sys; print('PLANTED by another job', file=sys.stderr)\\n")
        print("WROTE", path, flush=True)
    except OSError as exc:
        print("denied", path, exc.__class__.__name__, flush=True)
print("environment", sys.prefix, flush=True)
"""


def test_a_job_cannot_change_the_cached_environment_another_users_next_job_runs_in(stack, alice, bob, tmp_path):
    planter = bob.wait(submit(bob, tmp_path, PLANTER)["id"], timeout_s=TIMEOUT_S)
    log = bob.log(planter["id"])
    assert planter["state"] == "succeeded" and "environment " in log, (planter, log)
    assert "WROTE" not in log and "site-packages/nias_job.py " in log, log
    victim = alice.wait(submit(alice, tmp_path, "import nias_job\nprint('ran', flush=True)\n")["id"],
                        timeout_s=TIMEOUT_S)
    victim_log = alice.log(victim["id"])
    assert victim["state"] == "succeeded" and "ran" in victim_log, (victim, victim_log)
    assert victim["env_cached"] and "PLANTED" not in victim_log  # the same environment, as it was built
    environment = Path(log.split("environment ", 1)[1].split()[0])
    assert not list(environment.glob("lib/python3*/site-packages/zz_planted.pth"))


# -- 3. uids and signals --------------------------------------------------------------------------------
SIGNALLER = """
import ctypes, errno, os, signal
print("uid", os.getuid(), flush=True)
for signum in (0, signal.SIGTERM, signal.SIGKILL):
    try:
        os.kill(OTHER, signum)
        print("SIGNALLED", signum, flush=True)
    except PermissionError:
        print("refused", signum, flush=True)
    except ProcessLookupError:
        print("not visible", signum, flush=True)
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
if libc.ptrace(PTRACE_ATTACH, OTHER, None, None) == 0:
    print("TRACING", flush=True)
else:
    print("ptrace refused:", errno.errorcode[ctypes.get_errno()], flush=True)
"""


def test_two_jobs_running_at_once_have_different_uids_and_cannot_signal_each_other(stack, alice, bob, tmp_path):
    target = running(alice, submit(alice, tmp_path, "import os\nprint('uid', os.getuid(), flush=True)\n" + HOLD),
                     says="uid ")
    target_uid = logged_number(alice.log(target["id"]), "uid")
    target_pid = job_process(target_uid)
    signaller = bob.wait(submit(bob, tmp_path, SIGNALLER.replace("OTHER", str(target_pid)))["id"], timeout_s=TIMEOUT_S)
    log = bob.log(signaller["id"])
    assert signaller["state"] == "succeeded" and signaller["unit"] != target["unit"], (signaller, log)
    signaller_uid = logged_number(log, "uid")
    assert signaller_uid != target_uid
    assert {signaller_uid, target_uid} <= set(UID_RANGE) and not {signaller_uid, target_uid} & unit_uids(stack)
    assert "SIGNALLED" not in log and "TRACING" not in log
    assert "ptrace refused: EPERM" in log or "ptrace refused: ESRCH" in log, log
    for signum in (0, 15, 9):
        assert f"refused {signum}" in log or f"not visible {signum}" in log, log
    assert alice.job(target["id"])["state"] == "running" and read_process(target_pid) is not None
    release(stack, target)
    assert alice.wait(target["id"], timeout_s=TIMEOUT_S)["state"] == "succeeded"


# -- 4. memory ------------------------------------------------------------------------------------------
# A job trying to give itself more memory by writing its own cgroup's limits (v1 and v2 names).
RAISE_OWN_LIMIT = """
for line in open("/proc/self/cgroup"):
    _, controllers, path = line.strip().split(":", 2)
    names = {"memory": ["memory/memory.limit_in_bytes", "memory/memory.memsw.limit_in_bytes"],
             "": ["memory.max", "memory.swap.max"]}
    for controller, files in names.items():
        if controller in controllers.split(",") or controller == controllers:
            for name in files:
                folder, _, file = name.rpartition("/")
                target = "/".join(part for part in ("/sys/fs/cgroup", folder, path.strip("/"), file) if part)
                try:
                    with open(target, "w") as handle:
                        handle.write(str(1 << 40))
                    print("RAISED", target, flush=True)
                except OSError as exc:
                    print("kept", target, exc.__class__.__name__, flush=True)
"""

SHARED_MAPPING = """
import mmap
size = MEGABYTES * 1024 * 1024
area = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
for offset in range(0, size, mmap.PAGESIZE):
    area[offset] = 1
print("touched", MEGABYTES, "MiB", flush=True)
"""

CHILDREN = """
import os, sys, time
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (100 * 1024 * 1024)
        time.sleep(3)
        os._exit(0)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
if any(statuses):
    sys.exit(f"a child ended with status {statuses}")
"""


def test_memory_beyond_the_jobs_own_limit_fails_the_job_naming_the_limit(stack, alice, tmp_path):
    mapping = submit(alice, tmp_path, RAISE_OWN_LIMIT + SHARED_MAPPING.replace("MEGABYTES", "400"), memory_mb=256)
    children = submit(alice, tmp_path, CHILDREN, memory_mb=256)
    for job in (mapping, children):
        done = alice.wait(job["id"], timeout_s=TIMEOUT_S)
        assert done["state"] == "failed", done
        assert "used more than its memory limit of 256 MB" in done["error"], done["error"]
    assert "RAISED" not in alice.log(mapping["id"])
    within = alice.wait(submit(alice, tmp_path, SHARED_MAPPING.replace("MEGABYTES", "100"), memory_mb=256)["id"],
                        timeout_s=TIMEOUT_S)
    assert within["state"] == "succeeded", within
    assert "touched 100 MiB" in alice.log(within["id"])


# -- 5. and 6. the broker: forged events, a stolen job message --------------------------------------------
def pika_copy() -> dict:
    """A copy of pika to put beside code.py: a job needs no package index to speak AMQP."""
    package = Path(pika.__file__).parent
    return {f"pika/{path.relative_to(package).as_posix()}": path.read_bytes() for path in package.rglob("*.py")}


def broker_log(stack: LocalStack, client: NiasClient, job: dict) -> str | None:
    """The log of a job that spoke to RabbitMQ once it ended; None when it could not connect (under bubblewrap)."""
    job = client.wait(job["id"], timeout_s=TIMEOUT_S)
    log = client.log(job["id"])
    assert job["state"] == "succeeded", (job, log)
    if stack.env["NIAS_SANDBOX"] == "bwrap":  # no network in the sandbox
        assert "cannot connect:" in log and "connected" not in log, log
        return None
    assert "connected" in log, log
    return log


CONNECT = """
import sys, pika
try:
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1,
        socket_timeout=5))
except Exception as exc:
    print("cannot connect:", exc.__class__.__name__, flush=True)
    sys.exit(0)
channel = connection.channel()
print("connected", flush=True)
"""

FORGER = CONNECT + """
for body in BODIES:
    channel.basic_publish("", QUEUE, body, pika.BasicProperties(delivery_mode=2))
print("published", len(BODIES), flush=True)
connection.close()
"""

THIEF = CONNECT + """
import time
for _ in range(600):
    method, properties, body = channel.basic_get(QUEUE, auto_ack=False)
    if method is not None:
        channel.basic_ack(method.delivery_tag)
        print("stole", properties.message_id, body[:300], flush=True)
        break
    time.sleep(0.1)
connection.close()
"""


def forged_events(target: dict) -> list[bytes]:
    """Well-formed events for the target's attempt: `finished` saying it failed, unsigned and wrongly
    signed, and `lost` (which would queue it again), wrongly signed."""
    attempt = {"job_id": target["id"], "attempt": target["attempts"], "unit": target["unit"]}
    finished = JobEvent(**attempt, event=JobEvent.FINISHED, state="failed", exit_code=1, error="forged: it failed")
    lost = JobEvent(**attempt, event=JobEvent.LOST, error="forged: the unit died")
    wrong_key = b"a key that is not the unit's"
    return [finished.encode(), finished.encode(key=wrong_key), lost.encode(key=wrong_key)]


def dead_letters(stack: LocalStack) -> dict[bytes, str]:
    answer = stack.http.get(f"{stack.url}/api/admin/dead-letters", params={"limit": 500}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {message["body"].encode(): message["reason"] for message in answer.json()["messages"]}


def test_a_job_cannot_end_another_job_with_forged_events(stack, alice, bob, tmp_path):
    target = running(alice, submit(alice, tmp_path, "print('working', flush=True)\n" + HOLD
                                   + "open('output/own.txt', 'w').write('own outcome')\n"), says="working")
    bodies = forged_events(target)
    code = FORGER.replace("BODIES", repr(bodies)).replace("QUEUE", repr(Topology(stack.prefix).events))
    log = broker_log(stack, bob, submit(bob, tmp_path, code, pika_copy()))
    if log is not None:
        assert f"published {len(bodies)}" in log, log
        reasons = wait_until(lambda: (letters := dead_letters(stack)) and all(b in letters for b in bodies)
                             and letters, timeout_s=30, message="the forged events dead-lettered")
        unsigned, *wrongly_signed = (reasons[body] for body in bodies)
        assert "bad_signature" in unsigned and "not signed" in unsigned, unsigned
        for reason in wrongly_signed:
            assert "bad_signature" in reason and "does not verify" in reason, reason
    assert alice.job(target["id"])["state"] == "running"
    release(stack, target)
    done = alice.wait(target["id"], timeout_s=TIMEOUT_S)
    assert done["state"] == "succeeded" and done["exit_code"] == 0 and not done["error"], done
    assert done["attempts"] == 1  # the forged `lost` did not queue it again
    assert zipfile.ZipFile(alice.result(target["id"], tmp_path / "own.zip")).read("own.txt") == b"own outcome"


def test_a_job_message_stolen_from_the_queue_is_published_again_and_the_job_runs(stack, alice, bob, tmp_path):
    blocker = running(bob, submit(bob, tmp_path, HOLD))
    thief_code = THIEF.replace("QUEUE", repr(Topology(stack.prefix).jobs))
    thief = submit(bob, tmp_path, thief_code, pika_copy())
    wait_until(lambda: any(word in bob.log(thief["id"]) for word in ("connected", "cannot connect:")),
               timeout_s=60, message="the thief ready")
    waiting = submit(alice, tmp_path, "open('output/ran.txt', 'w').write('ran')\n")
    log = broker_log(stack, bob, thief)
    if log is not None:
        assert f"stole {waiting['id']}" in log, log
    done = alice.wait(waiting["id"], timeout_s=TIMEOUT_S)
    assert done["state"] == "succeeded", done
    assert zipfile.ZipFile(alice.result(waiting["id"], tmp_path / "ran.zip")).read("ran.txt") == b"ran"
    release(stack, blocker)


# -- 7. another deployment on the same host ------------------------------------------------------------
def test_units_of_another_deployment_starting_on_the_same_host_leave_running_jobs_alone(
        stack, alice, tmp_path, tmp_path_factory):
    job = running(alice, submit(alice, tmp_path, "import os\nprint('uid', os.getuid(), flush=True)\n" + HOLD),
                  says="uid ")
    process = read_process(job_process(logged_number(alice.log(job["id"]), "uid")))
    # Its units have the same names (unit-1, unit-2) and clean up what earlier runs of theirs left.
    with LocalStack(tmp_path_factory.mktemp("neighbour"), units=2, NIAS_SANDBOX="off"):
        pass
    alive = still_running(process)
    if alive:
        release(stack, job)
    done = alice.wait(job["id"], timeout_s=TIMEOUT_S)
    assert alive and done["state"] == "succeeded", f"the job ended {done['state']}: {done['error']}"
