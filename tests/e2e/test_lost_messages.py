"""A queued job whose message disappears from RabbitMQ (purged, or dead-lettered after failed
deliveries) is published again, and fails with the reason once that has happened too often."""
from __future__ import annotations

import pytest

from nias.amqp import Topology, connect
from nias.settings import load_settings
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, wait_until

BLOCKER = "import time\nprint('blocking', flush=True)\ntime.sleep(120)\n"


@pytest.fixture(scope="module")
def redispatch_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("lost"), units=1, NIAS_LEASE_S="4", NIAS_REDISPATCH_S="2",
                    NIAS_REDISPATCH_LIMIT="2") as stack:
        yield stack


def _purge_jobs_queue(stack) -> int:
    connection = connect(load_settings(stack.env), attempts=3)
    try:
        return connection.channel().queue_purge(Topology(stack.prefix).jobs).method.message_count
    finally:
        connection.close()


def _block_the_unit(stack, tmp_path) -> dict:
    client = stack.client
    blocker = client.submit(zip_entries(tmp_path / "blocker.zip", {"code.py": BLOCKER}), name="blocker")
    wait_until(lambda: "blocking" in client.log(blocker["id"]), timeout_s=60, message="the blocker runs")
    return blocker


def test_a_job_whose_message_was_purged_is_published_again_and_runs(redispatch_stack, tmp_path):
    client = redispatch_stack.client
    blocker = _block_the_unit(redispatch_stack, tmp_path)
    waiting = client.submit(zip_entries(tmp_path / "w.zip", {"code.py": "open('output/ran.txt', 'w').write('ran')\n"}))
    wait_until(lambda: _purge_jobs_queue(redispatch_stack) == 1, timeout_s=30, message="its message purged")
    assert client.job(waiting["id"])["state"] == "queued"
    client.set_state(blocker["id"], "cancelled")
    done = client.wait(waiting["id"], timeout_s=120)
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert "Its queue message was lost" not in (done["error"] or "")


def test_a_job_whose_message_keeps_being_lost_fails_saying_so(redispatch_stack, tmp_path):
    client = redispatch_stack.client
    blocker = _block_the_unit(redispatch_stack, tmp_path)
    waiting = client.submit(zip_entries(tmp_path / "w.zip", {"code.py": "pass\n"}))

    def purged_until_failed() -> bool:
        _purge_jobs_queue(redispatch_stack)
        return client.job(waiting["id"])["state"] == "failed"

    wait_until(purged_until_failed, timeout_s=90, interval_s=0.3, message="the job failed as undeliverable")
    failed = client.job(waiting["id"])
    assert failed["error"].startswith("Its queue message was lost 3 times"), failed
    assert failed["attempts"] == 0
    history = client.history(waiting["id"])
    assert history[-1]["to"] == "failed" and "lost 3 times" in history[-1]["reason"]
    client.set_state(blocker["id"], "cancelled")
    assert client.wait(blocker["id"], timeout_s=60)["state"] == "cancelled"
