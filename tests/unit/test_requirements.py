"""What a requirements.txt may name: packages from the index, never a path, a URL or an option."""
from __future__ import annotations

import pytest

from nias.errors import BadUpload
from nias.requirements import MAX_LINES, check_requirements


@pytest.mark.parametrize("text, expected", [
    ("numpy==2.1.0\nscipy>=1.13  # filters\n", ["numpy==2.1.0", "scipy>=1.13"]),
    ("requests[socks] >= 2.31 ; python_version >= '3.8'\n", ["requests[socks] >= 2.31 ; python_version >= '3.8'"]),
    ("six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n",
     ["six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"]),
    ("# nothing yet\n\n", []),
])
def test_plain_package_requirements_pass_normalised(text, expected):
    assert check_requirements(text) == expected


@pytest.mark.parametrize("line, says", [
    ("./evil", "not a package name"),
    ("/srv/nias/data/jobs/other/project", "not a package name"),
    ("file:///etc", "not a package name"),
    ("git+https://example.org/evil.git", "not a package name"),
    ("evil @ file:///tmp/evil", "URL or a path"),
    ("evil @ https://example.org/evil-1.0.tar.gz", "URL or a path"),
    ("-e ./evil", "option"),
    ("-r /etc/passwd", "option"),
    ("--index-url http://10.0.0.1/simple", "option"),
    ("--extra-index-url=http://10.0.0.1/simple", "option"),
    ("-c constraints.txt", "option"),
])
def test_a_path_url_or_option_is_refused_naming_its_line(line, says):
    with pytest.raises(BadUpload) as refused:
        check_requirements(f"six==1.16.0\n# a comment\n{line}\n")
    assert refused.value.code == "unsafe_requirements"
    assert "line 3" in refused.value.message and says in refused.value.message


def test_a_requirements_file_longer_than_the_limit_is_refused():
    with pytest.raises(BadUpload, match=str(MAX_LINES)):
        check_requirements("".join(f"package{i}\n" for i in range(MAX_LINES + 1)))
