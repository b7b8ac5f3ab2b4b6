"""The job's parameters as code.py sees them: params.json in its project folder."""
from __future__ import annotations

import json
from pathlib import Path

from nias.errors import ExecutionFailed
from nias.params import PARAMS_FILE


def write_params_file(project: Path, params: dict) -> Path:
    """Write the job's parameters into the unpacked project; a params.json the upload brought
    stays when the job has none of its own."""
    path = project / PARAMS_FILE
    try:
        if params or not (path.is_file() and not path.is_symlink()):
            if path.is_dir() and not path.is_symlink():
                raise ExecutionFailed(f"The project holds a folder named {PARAMS_FILE}, where the job's "
                                      "parameters go; rename it.")
            path.unlink(missing_ok=True)  # never write through a link the upload placed there
            path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise ExecutionFailed(f"The job's {PARAMS_FILE} could not be written: {exc.strerror or exc}.") from None
    return path
