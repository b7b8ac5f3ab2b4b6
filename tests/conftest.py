import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
