"""`make chaos`: 200 short jobs on three processing units and one on a host of its own (its own
network and mount namespaces; needs root) while units, consumers and the remote unit are killed
at random, RabbitMQ is restarted once and the backend once; prints lost, duplicated, failed and
succeeded counts and exits non-zero if any job was lost, run twice or left with a result not its own."""
from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.chaos import run_chaos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=6, help="kills of units and of consumers, each")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    plan = ["unit"] * args.kills + ["consumer"] * args.kills + ["remote"] * max(args.kills // 2, 1) + ["rabbitmq", "backend"]
    random.Random(args.seed).shuffle(plan)
    with tempfile.TemporaryDirectory(prefix="nias-chaos-") as folder:
        report = run_chaos(Path(folder), jobs=args.jobs, units=3, plan=plan, seed=args.seed,
                           spread_s=max(60.0, args.jobs * 0.5), timeout_s=900, remote_units=1)
    print(report.summary())
    print(f"lost={report.lost} duplicated={report.duplicated} failed={report.failed} succeeded={report.succeeded}"
          f" mismatched={report.mismatched}")
    sys.exit(1 if report.lost or report.duplicated or report.mismatched else 0)


if __name__ == "__main__":
    main()
