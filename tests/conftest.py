import sys
from pathlib import Path

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
