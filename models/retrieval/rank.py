"""What each torchrun rank runs: read the RunSpec, train with `models.retrieval.distributed.run`,
and have rank 0 report the result.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m models.retrieval.rank --spec spec.json

No Dagster here: this entry point reads the spec from a file and writes rank 0's summary to the
spec's `summary_path` (tests, benchmarks). The two_tower_model asset launches
`assets.training._rank` instead, which calls `rank_main` with a Dagster Pipes channel: the spec
then comes in the Pipes extras and the log lines and the result go back through Pipes.
`torchrun_command` takes the entry point from its caller, so this library never names a
module of assets/.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from models.retrieval.distributed import BACKEND, RunSpec, _rank_env, _read_spec, _Reporter, run


def rank_main(argv: list[str] | None = None, channel: Callable[[], AbstractContextManager] | None = None) -> None:
    """One rank's whole run. `channel` opens rank 0's message channel to a launcher (a context
    manager yielding an object with `log.info`, `report_custom_message`, `get_extra`, or None);
    without it rank 0 logs to stderr."""
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", help="RunSpec JSON file (default: the launcher's channel)")
    args = parser.parse_args(argv)
    rank, _ = _rank_env()
    opened = channel() if rank == 0 and channel is not None else nullcontext(None)  # one writer: rank 0
    with opened as pipes:  # on an exception, the launcher gets it structured when the channel closes
        report = _Reporter(pipes)
        dist.init_process_group(BACKEND)
        try:
            box = [_read_spec(args.spec, pipes) if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)
            spec = RunSpec.from_dict(box[0])
            summary = run(spec, report, started)
        finally:
            dist.destroy_process_group()
        if summary is not None:
            report.message({"result": summary})
            if spec.summary_path:
                Path(spec.summary_path).write_text(json.dumps(summary, indent=2, default=str))


@record  # a failing rank's traceback goes into torchrun's error summary
def main(argv: list[str] | None = None) -> None:
    rank_main(argv)


if __name__ == "__main__":
    main()
