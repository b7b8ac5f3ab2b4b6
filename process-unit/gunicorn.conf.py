"""gunicorn settings for a processing unit: they live in the package (process_unit/gunicorn_config.py),
so `nias-unit` finds them without a checkout."""
from process_unit.gunicorn_config import *  # noqa: F401,F403
