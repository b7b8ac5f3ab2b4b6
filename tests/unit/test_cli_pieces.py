"""The CLI's own pieces: a folder zipped by its .niasignore, the streamed multipart body, the config
file and which exit code each kind of error gives."""
from __future__ import annotations

import os
import zipfile
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from nias.cli_common import Exit, exit_code_for
from nias.cli_config import config_path, load_config, save_config
from nias.client import ApiError
from nias.errors import BadUpload, ConfigurationError, ServiceUnavailable
from nias.multipart import MultipartUpload
from nias.project_zip import zip_folder


def test_a_folder_is_zipped_without_ignored_files_caches_or_links(tmp_path):
    folder = tmp_path / "project"
    (folder / "data" / "raw").mkdir(parents=True)
    (folder / "__pycache__").mkdir()
    (folder / "code.py").write_text("print(1)\n")
    (folder / "data" / "keep.csv").write_text("1\n")
    (folder / "data" / "raw" / "big.dat").write_text("x")
    (folder / "data" / "important.dat").write_text("y")
    (folder / "__pycache__" / "code.cpython-311.pyc").write_bytes(b"\0")
    (folder / "link.txt").symlink_to("/etc/hostname")
    (folder / ".niasignore").write_text("# raw inputs stay here\ndata/raw/\n*.dat\n!data/important.dat\n")
    zipped, links = zip_folder(folder, tmp_path / "p.zip")
    assert sorted(zipfile.ZipFile(zipped).namelist()) == ["code.py", "data/important.dat", "data/keep.csv"]
    assert links == ["link.txt"]


def test_a_folder_whose_code_py_is_ignored_is_refused(tmp_path):
    (tmp_path / "code.py").write_text("")
    (tmp_path / ".niasignore").write_text("*.py\n")
    with pytest.raises(BadUpload, match="no code.py"):
        zip_folder(tmp_path, tmp_path.parent / "refused.zip")


def test_the_multipart_body_parses_back_and_reports_every_byte_it_sends(tmp_path):
    payload = tmp_path / "project.zip"
    payload.write_bytes(os.urandom(300_000))
    sent = []
    body = MultipartUpload({"name": 'a "quoted" name', "priority": "3"}, "file", payload, on_progress=sent.append)
    raw = b""
    while chunk := body.read(8192):
        raw += chunk
    assert len(raw) == body.len == sum(sent)
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {body.content_type}\r\n\r\n".encode() + raw)
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    assert parts["priority"].get_content() == "3"
    assert parts["file"].get_filename() == "project.zip"
    assert parts["file"].get_payload(decode=True) == payload.read_bytes()


def test_the_config_file_is_private_and_found_through_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.delenv("NIAS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = save_config("http://nias.lab:8080", "nias_secret")
    assert path == config_path() == tmp_path / "nias" / "config.toml"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_config() == {"url": "http://nias.lab:8080", "token": "nias_secret"}
    path.write_text("url = [broken")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config()


@pytest.mark.parametrize("error, code", [
    (ApiError("bad zip", code="not_a_zip", status=400), Exit.REFUSED),
    (ApiError("no such job", code="job_not_found", status=404), Exit.REFUSED),
    (ApiError("who are you", code="unauthenticated", status=401), Exit.NOT_SIGNED_IN),
    (ApiError("admins only", code="forbidden", status=403), Exit.NOT_SIGNED_IN),
    (ApiError("broker down", code="broker_unavailable", status=503), Exit.UNAVAILABLE),
    (ServiceUnavailable("unreachable"), Exit.UNAVAILABLE),
    (TimeoutError("still running"), Exit.UNAVAILABLE),
    (ConfigurationError("bad config file", status=400), Exit.USAGE),
])
def test_each_kind_of_error_has_its_exit_code(error, code):
    assert exit_code_for(error) is code
