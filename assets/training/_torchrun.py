"""Launch data-parallel training (models.retrieval.distributed) under torchrun through Dagster
Pipes, and turn a failed launch into a dg.Failure that shows the ranks' errors.

With `nodes` > 1 every node is its own torchrun agent meeting the others at a rendezvous: node 0
(global rank 0, which reports and writes the checkpoint) runs through Pipes, the other nodes'
agents are started beside it on this machine with a rendezvous on 127.0.0.1 -- the multi-node
path proven on loopback. On a cluster the other nodes are the deployment's pods running the same
command with their `--node-rank` and node 0's address (`torchrun_command(..., nodes=, node_rank=,
master=)`), and node 0 runs through `PipesK8sClient` as the comment in two_tower_model.py says."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import dagster as dg

import assets.training._rank as rank_entry
from models.retrieval.distributed import SPEC_EXTRA, free_port, rank_logs, threads_per_rank, torchrun_command


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


def _start_other_nodes(
    workers: int, nodes: int, master: str, log_root: Path, threads: int
) -> list[tuple[subprocess.Popen, Path]]:
    """Nodes 1..nodes-1 as background torchrun agents on this machine (each logs under its own
    folder); their ranks get the spec from rank 0 (a broadcast), so they need no Pipes channel."""
    started = []
    for node in range(1, nodes):
        log_dir = log_root / f"node{node}"
        log_dir.mkdir(parents=True)
        command = torchrun_command(
            workers, rank_entry.__name__, log_dir=log_dir, nodes=nodes, node_rank=node, master=master
        )
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        started.append((proc, log_dir))
    return started


def _finish_other_nodes(started: list[tuple[subprocess.Popen, Path]], timeout: float) -> dict[str, str]:
    """Wait for the other nodes' agents; {"node N": why} for each that failed (killed after
    `timeout` seconds: node 0 has finished, so a node still running is stuck)."""
    failed = {}
    for node, (proc, log_dir) in enumerate(started, start=1):
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            failed[f"node {node}"] = f"still running {timeout:.0f} s after node 0 ended: killed"
            continue
        if proc.returncode:
            logs = rank_logs(log_dir)
            failed[f"node {node}"] = f"exit code {proc.returncode}: " + (
                "; ".join(f"{k}: {v}" for k, v in logs.items()) or (err or "")[-2000:]
            )
    return failed


def train_on_workers(
    context: dg.AssetExecutionContext, client: dg.PipesSubprocessClient, workers: int, spec: dict, nodes: int = 1
) -> dict:
    """Run torchrun with `workers` ranks over `nodes` agents on this machine; returns rank 0's
    result summary (checkpoint path, metrics, history, whether the ranks' weights agreed)."""
    threads = threads_per_rank(workers)
    if threads_per_rank(1) < workers:
        context.log.warning(
            f"{workers} ranks on {threads_per_rank(1)} cores: the ranks will share cores and "
            "each step will wait for the slowest"
        )
    spec = {**spec, "threads": threads}
    master = f"127.0.0.1:{free_port()}" if nodes > 1 else "127.0.0.1:29500"
    with tempfile.TemporaryDirectory(prefix="towerflow-torchrun-") as log_dir:
        command = torchrun_command(workers, rank_entry.__name__, log_dir=log_dir, nodes=nodes, master=master)
        others = _start_other_nodes(workers, nodes, master, Path(log_dir) / "other-nodes", threads) if nodes > 1 else []
        where = f" over {nodes} nodes meeting at {master}" if nodes > 1 else ""
        context.log.info(f"launching {workers} ranks x {threads} thread(s){where}: {' '.join(command)}")
        try:
            invocation = client.run(
                context=context,
                command=command,
                extras={SPEC_EXTRA: spec},
                env={"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"},
            )
        except Exception as e:
            other_errors = _finish_other_nodes(others, timeout=30)
            errors, logs = {**_failures(log_dir), **other_errors}, rank_logs(log_dir)
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
        if failed := _finish_other_nodes(others, timeout=60):
            raise dg.Failure(description=f"node 0 finished but other nodes failed: {failed}")
    results = [m["result"] for m in invocation.get_custom_messages() if isinstance(m, dict) and "result" in m]
    if not results:
        raise dg.Failure(
            description=f"torchrun exited 0 but rank 0 reported no result through Pipes ({' '.join(command)})"
        )
    return {**results[-1], "nodes": nodes}
