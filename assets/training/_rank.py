"""What each torchrun rank runs when the two_tower_model asset launches training
(`python -m assets.training._rank`): `models.retrieval.rank.rank_main` with rank 0's channel
to Dagster Pipes (the spec comes in the Pipes extras, log lines and the result go back as Pipes
messages). The training and the rank's run live in models/ (no Dagster); only the Pipes side
lives here. Outside a Pipes launch (a --spec file) it runs as the library entry point does."""

from __future__ import annotations

from contextlib import nullcontext

from torch.distributed.elastic.multiprocessing.errors import record

from models.retrieval.rank import rank_main


def _pipes_channel():
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    return open_dagster_pipes() if PipesEnvVarParamsLoader().is_dagster_pipes_process() else nullcontext(None)


@record  # a failing rank's traceback goes into torchrun's error summary
def main(argv: list[str] | None = None) -> None:
    rank_main(argv, channel=_pipes_channel)


if __name__ == "__main__":
    main()
