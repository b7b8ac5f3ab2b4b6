"""The CLI's configuration file: where the server is and the API token, written by `nias login`.

`$NIAS_CONFIG`, else `$XDG_CONFIG_HOME/nias/config.toml`, else `~/.config/nias/config.toml`:

    url = "http://127.0.0.1:8080"
    token = "nias_..."

Options (`--url`, `--token`) and the environment (`NIAS_URL`, `NIAS_TOKEN`) come before it.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import tomli_w

from nias.errors import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8080"


def config_path() -> Path:
    if os.environ.get("NIAS_CONFIG"):
        return Path(os.environ["NIAS_CONFIG"])
    base = Path(os.environ["XDG_CONFIG_HOME"]) if os.environ.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "nias" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, str]:
    """The file's `url` and `token` ({} when there is no file); a file that is not TOML is an error."""
    path = path or config_path()
    try:
        with open(path, "rb") as handle:
            found = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    return {key: str(found[key]) for key in ("url", "token") if key in found}


def save_config(url: str, token: str, path: Path | None = None) -> Path:
    """Write the URL and token, readable by this user alone (the token signs in as them)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tomli_w.dump({"url": url, "token": token}, handle)
    path.chmod(0o600)
    return path
