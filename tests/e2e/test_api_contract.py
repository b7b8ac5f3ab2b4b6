"""The live API against its own OpenAPI document: Schemathesis calls every operation with generated
requests (a bounded number each) and finds no 5xx, no answer that breaks the document, and no
success without credentials. A stack of its own, since the calls create users, tokens and re-runs."""
from __future__ import annotations

import re
import subprocess
import uuid
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import STACK_ENV
from tests.support.browser import browser  # noqa: F401 - a fixture
from tests.support.projects import WELCH, zip_project
from tests.support.stack import LocalStack

BIN = Path(sys.executable).parent
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,ignored_auth")
EXAMPLES_PER_OPERATION = 40
# The event stream never ends by design: it is left to the tests of live updates.
ENDLESS = "/api/events"


@pytest.fixture(scope="module")
def contract_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("contract"), units=1, **STACK_ENV) as stack:
        yield stack


def seeded_config(stack: LocalStack, folder: Path) -> Path:
    """A finished job, a sweep, a user and a command, so the generated calls reach past `404` to real records."""
    client = stack.client
    command = stack.data_dir / "commands" / "welch"
    command.mkdir(parents=True, exist_ok=True)
    (command / "command.toml").write_text(WELCH)
    (command / "code.py").write_text("print('a command ran')\n")
    job = client.wait(client.submit(zip_project("hello", folder / "hello.zip"), name="contract")["id"])
    sweep = client.submit(folder / "hello.zip", sweep={"alpha": [1, 2]})
    client.wait_sweep(sweep["id"])
    user = stack.http.post(f"{stack.url}/api/users", json={"email": f"contract-{uuid.uuid4().hex[:8]}@lab.example",
                                                           "password": "a long enough password"}, timeout=10).json()
    config = folder / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        f'"path.job_id" = "{job["id"]}"\n'
        f'"path.sweep_id" = "{sweep["id"]}"\n'
        f'"path.user_id" = "{user["id"]}"\n'
        "\n[[operations]]\n"
        'include-path = "/api/jobs/{job_id}/files/{name}"\n'
        'parameters = { "path.name" = "result.txt" }\n'
        "\n[[operations]]\n"
        'include-path-regex = "^/api/commands/"\n'
        'parameters = { "path.name" = "welch-psd" }\n'
    )
    return config


def test_every_operation_holds_to_the_openapi_document_under_generated_requests(contract_stack, tmp_path):
    config = seeded_config(contract_stack, tmp_path)
    run = subprocess.run(
        [str(BIN / "schemathesis"), "--config-file", str(config), "--no-color", "run",
         f"{contract_stack.url}/api/openapi.json", "--header", f"Authorization: Bearer {contract_stack.admin_token}",
         "--checks", CHECKS, "--max-examples", str(EXAMPLES_PER_OPERATION), "--exclude-path", ENDLESS,
         "--request-timeout", "30", "--workers", "1", "--seed", "1"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)  # its cache stays out of the checkout
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    document = contract_stack.http.get(f"{contract_stack.url}/api/openapi.json", timeout=10).json()
    operations = sum(len([m for m in methods if m in ("get", "put", "post", "delete", "patch")])
                     for methods in document["paths"].values())
    tried = next((line for line in run.stdout.splitlines() if "Operations:" in line), "")
    counts = re.search(r"(\d+) selected / (\d+) total", tried)
    # Every operation Schemathesis read from the document but the endless event stream was tried.
    assert counts and int(counts[1]) == int(counts[2]) - 1 and operations - 1 <= int(counts[2]) <= operations, tried


def test_the_api_reference_page_draws_every_operation_from_the_servers_own_assets(contract_stack, browser):
    page = browser.new_page()
    elsewhere = []
    page.on("request", lambda request: elsewhere.append(request.url)
            if not request.url.startswith(contract_stack.url) else None)
    try:
        page.goto(f"{contract_stack.url}/api-docs/")
        page.wait_for_selector(".opblock", timeout=30_000)
        document = contract_stack.http.get(f"{contract_stack.url}/api/openapi.json", timeout=10).json()
        operations = sum(len(item) for item in document["paths"].values())
        assert page.locator(".opblock").count() == operations
        assert page.get_by_text("/api/jobs/{job_id}/log").count() >= 1
    finally:
        page.close()
    assert not elsewhere, f"the reference page asked other servers: {elsewhere}"
