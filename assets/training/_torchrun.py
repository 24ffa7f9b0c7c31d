"""Launch data-parallel training (models.retrieval.distributed) under torchrun through Dagster
Pipes, and turn a failed launch into a dg.Failure that shows the ranks' errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dagster as dg

import assets.training._rank as rank_entry
from models.retrieval.distributed import SPEC_EXTRA, rank_logs, threads_per_rank, torchrun_command


def _failures(log_dir: str) -> dict[str, str]:
    """{"rank N": message} from the error files torchrun's @record wrote for failed ranks."""
    out = {}
    for path in sorted(Path(log_dir).glob("*/attempt_*/*/error.json")):
        try:
            message = json.loads(path.read_text())["message"]
            out[f"rank {path.parent.name}"] = message["message"] if isinstance(message, dict) else str(message)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def train_on_workers(
    context: dg.AssetExecutionContext, client: dg.PipesSubprocessClient, workers: int, spec: dict
) -> dict:
    """Run torchrun with `workers` ranks on this machine; returns rank 0's result summary
    (checkpoint path, metrics, history, whether the ranks' weights agreed)."""
    threads = threads_per_rank(workers)
    if threads_per_rank(1) < workers:
        context.log.warning(
            f"{workers} ranks on {threads_per_rank(1)} cores: the ranks will share cores and "
            "each step will wait for the slowest"
        )
    spec = {**spec, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="towerflow-torchrun-") as log_dir:
        command = torchrun_command(workers, rank_entry.__name__, log_dir=log_dir)
        context.log.info(f"launching {workers} ranks x {threads} thread(s): {' '.join(command)}")
        try:
            invocation = client.run(
                context=context,
                command=command,
                extras={SPEC_EXTRA: spec},
                env={"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"},
            )
        except Exception as e:
            errors, logs = _failures(log_dir), rank_logs(log_dir)
            shown = {k: v for k, v in logs.items() if "Traceback" in v} or logs
            raise dg.Failure(
                description=(
                    f"distributed training on {workers} ranks failed ({e}). "
                    + ("; ".join(f"{k}: {v}" for k, v in errors.items()) or "no rank recorded an error")
                    + "".join(f"\n\n--- {k} (tail) ---\n{v}" for k, v in shown.items())
                ),
                metadata={
                    "command": " ".join(command),
                    **{f"{k} error": v for k, v in errors.items()},
                    **{k: dg.MetadataValue.md(f"```\n{v}\n```") for k, v in shown.items()},
                },
            ) from e
    results = [m["result"] for m in invocation.get_custom_messages() if isinstance(m, dict) and "result" in m]
    if not results:
        raise dg.Failure(
            description=f"torchrun exited 0 but rank 0 reported no result through Pipes ({' '.join(command)})"
        )
    return results[-1]
