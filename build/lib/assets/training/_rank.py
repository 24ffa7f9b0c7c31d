"""What each torchrun rank runs (`python -m assets.training._rank`): read the RunSpec (a file, or
the Dagster Pipes extras the two_tower_model asset sends), train with
`models.retrieval.distributed.run`, and report through Pipes from rank 0. The training itself
lives in models/ (no Dagster); only the Pipes side lives here."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from models.retrieval.distributed import BACKEND, RunSpec, _rank_env, _read_spec, _Reporter, run


@record  # a failing rank's traceback goes into torchrun's error summary
def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", help="RunSpec JSON file (default: the Dagster Pipes extras)")
    args = parser.parse_args(argv)
    rank, _ = _rank_env()
    channel = nullcontext(None)
    if rank == 0:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

        if PipesEnvVarParamsLoader().is_dagster_pipes_process():
            channel = open_dagster_pipes()  # rank 0 alone: one writer on the message channel
    with channel as pipes:  # on an exception, Dagster gets it structured when the channel closes
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


if __name__ == "__main__":
    main()
