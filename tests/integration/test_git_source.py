"""`backend.git_source` against a real git server on 127.0.0.1 (`git http-backend`): a project is
fetched at a tag, a branch or a commit, from a subfolder too, and packed as a zip with its commit
recorded; what the admin did not allow, or a fetch that fails or grows too large, is refused with
the reason and leaves nothing behind."""
from __future__ import annotations

import os
import zipfile

import pytest

from backend.git_source import GitFetchFailed, GitSource, fetch_project, parse_git_source
from nias.errors import BadRequest
from nias.settings import load_settings
from tests.support.git_server import GitServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = GitServer(tmp_path_factory.mktemp("git"))
    server.ids = server.repository("eeg", [
        {"code.py": "print('v1')\n", "README.md": "one\n"},
        {"code.py": "print('v2')\n", "analysis/code.py": "print('sub')\n", "analysis/requirements.txt": "\n"},
    ], tags={"v1.0": 0})
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path):
    return load_settings({}, data_dir=tmp_path, git_hosts="127.0.0.1", git_http_hosts="127.0.0.1")


def _fetch(server, settings, tmp_path, **fields):
    source = parse_git_source({"url": f"{server.url}/eeg.git", **fields}, settings)
    target = tmp_path / "project.zip"
    commit = fetch_project(source, settings, target)
    with zipfile.ZipFile(target) as archive:
        return commit, {name: archive.read(name).decode() for name in archive.namelist() if not name.endswith("/")}


def test_a_tag_a_branch_and_a_commit_each_give_their_own_tree_and_commit(server, settings, tmp_path):
    assert _fetch(server, settings, tmp_path, ref="v1.0") == (server.ids[0], {"code.py": "print('v1')\n",
                                                                             "README.md": "one\n"})
    commit, files = _fetch(server, settings, tmp_path, ref="main")
    assert commit == server.ids[1] and files["code.py"] == "print('v2')\n"
    assert _fetch(server, settings, tmp_path, ref=server.ids[0])[0] == server.ids[0]
    assert _fetch(server, settings, tmp_path)[0] == server.ids[1]  # no ref: the repository's HEAD


def test_a_subfolder_is_the_projects_root(server, settings, tmp_path):
    commit, files = _fetch(server, settings, tmp_path, ref="main", path="analysis/")
    assert commit == server.ids[1]
    assert files == {"code.py": "print('sub')\n", "requirements.txt": "\n"}


def test_a_ref_or_folder_that_is_not_there_fails_with_gits_reason_and_leaves_nothing(server, settings, tmp_path):
    with pytest.raises(GitFetchFailed) as missing:
        _fetch(server, settings, tmp_path, ref="no-such-branch")
    assert "no-such-branch" in missing.value.message
    with pytest.raises(GitFetchFailed) as no_folder:
        _fetch(server, settings, tmp_path, ref="v1.0", path="analysis")
    assert "no folder 'analysis' at v1.0" in no_folder.value.message
    assert sorted(os.listdir(tmp_path)) == []


def test_a_repository_larger_than_the_upload_limit_is_refused(server, tmp_path):
    server.repository("big", [{"code.py": "pass\n", "noise.bin": os.urandom(3 * 1024 * 1024).hex()}])
    small = load_settings({}, data_dir=tmp_path, git_hosts="127.0.0.1", git_http_hosts="127.0.0.1", max_upload_mb=1)
    source = parse_git_source({"url": f"{server.url}/big.git", "ref": "main"}, small)
    with pytest.raises(GitFetchFailed) as refused:
        fetch_project(source, small, tmp_path / "big.zip")
    assert "larger than the upload limit of 1 MB" in refused.value.message
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("raw, words", [
    ({"url": "https://elsewhere.example/x.git"}, "only from the git hosts 127.0.0.1"),
    ({"url": "http://127.0.0.2/x.git"}, "Plain http is not allowed"),
    ({"url": "https://user:pw@127.0.0.1/x.git"}, "may not carry credentials"),
    ({"url": "file:///etc"}, "must be https://"),
    ({"url": "ssh://127.0.0.1/x.git"}, "must be https://"),
    ({"url": "https://127.0.0.1/x.git", "ref": "--upload-pack=evil"}, "ref must be"),
    ({"url": "https://127.0.0.1/x.git", "ref": "a..b"}, "ref must be"),
    ({"url": "https://127.0.0.1/x.git", "path": "../up"}, "inside the repository"),
    ({"url": "https://127.0.0.1/x.git", "path": ".git/hooks"}, "inside the repository"),
    ({"url": "https://127.0.0.1/x.git", "branch": "x"}, "not branch"),
    ("https://127.0.0.1/x.git", "must be an object"),
])
def test_what_the_admin_did_not_allow_is_refused_naming_why(settings, raw, words):
    with pytest.raises(BadRequest) as refused:
        parse_git_source(raw, load_settings({}, git_hosts="127.0.0.1"))
    assert words in refused.value.message


def test_with_no_git_hosts_set_no_job_comes_from_git(tmp_path):
    with pytest.raises(BadRequest) as refused:
        parse_git_source({"url": "https://127.0.0.1/x.git"}, load_settings({}, data_dir=tmp_path))
    assert refused.value.code == "git_disabled"


def test_an_admins_token_is_sent_to_its_host_only(settings):
    from backend.git_source import _token_header

    with_tokens = load_settings({}, git_tokens="git.lab.example=ci:s3cret, other.example=x:y")
    [flag, header] = _token_header(with_tokens, "git.lab.example")
    assert flag == "-c" and header == "http.extraHeader=Authorization: Basic Y2k6czNjcmV0"
    assert _token_header(with_tokens, "127.0.0.1") == []
    assert GitSource("https://h/r.git", "main").to_dict("c" * 40)["commit"] == "c" * 40
