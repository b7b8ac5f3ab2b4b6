import pytest

from tests.support.stack import LocalStack

# Limits low enough that the refusal tests stay small and fast.
STACK_ENV = {
    "NIAS_AMQP_HEARTBEAT_S": "2",
    "NIAS_MAX_UPLOAD_MB": "40",
    "NIAS_MAX_FILES": "50",
    "NIAS_MAX_UNPACKED_MB": "60",
    "NIAS_MAX_RATIO": "50",
    "NIAS_JOB_TIMEOUT_S": "120",
    "NIAS_WEB_TIMEOUT_S": "3",
    "NIAS_READ_TIMEOUT_S": "3",
    # The stalled-upload test sends 72 at once as one user: the per-user cap has its own test.
    "NIAS_MAX_UPLOADS_PER_USER": "100",
    "NIAS_MAX_UPLOADS": "100",
    # The webhook tests' receiver listens on loopback, which webhooks may not call unless allowed.
    "NIAS_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The whole stack, started as `make up` starts it, shared by the end-to-end tests."""
    with LocalStack(tmp_path_factory.mktemp("stack"), units=2, **STACK_ENV) as stack:
        yield stack


@pytest.fixture
def client(stack):
    return stack.client
