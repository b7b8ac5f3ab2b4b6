import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pytest_xdist_make_scheduler(config, log):
    """Under `make test`'s workers (pytest-xdist), a file's tests run in one worker, so its module
    fixtures (a stack, a browser) start once; the files that use the machine's one Slurm cluster
    (named *slurm*) run in one worker together."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "slurm" if "slurm" in Path(path).name else path

    return FileScheduling(config, log)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node Slurm cluster on 127.0.0.1 (tools/slurm_cluster.py), shared by every Slurm test."""
    from tools.slurm_cluster import start, stop

    root = Path(tempfile.mkdtemp(prefix="nias-slurm-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield start(root / "cluster")
    finally:
        stop(root / "cluster")
        shutil.rmtree(root, ignore_errors=True)
