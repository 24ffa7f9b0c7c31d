"""Micro-batching: concurrent requests queue, and up to `max_batch` of them are answered with one
user-tower forward and one FAISS search. Torch and FAISS run on one thread: a single request is
too small to split."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


class MicroBatcher:
    """Coalesces concurrent jobs into batches, one batch at a time.

    The first job of a batch waits at most `max_wait_ms` for company (0: only what is already
    queued), then up to `max_batch` queued jobs are answered together. By default the answer
    runs on the event loop's own thread: handing each batch to a worker thread costs two thread
    wake-ups, which on a busy 2-core machine cost more than the batch itself (a sequential
    client saw 18 ms per request through a worker thread, 3-5 ms in process). While a batch
    runs, new requests wait in the sockets and form the next batch, so batches grow with load
    by themselves. `worker_thread=True` answers on one worker thread instead, leaving the loop
    free to parse requests meanwhile (more throughput where cores are idle).
    """

    def __init__(self, answer, max_batch: int, max_wait_ms: float, threads: int = 1, worker_thread: bool = False):
        self.answer, self.max_batch, self.max_wait = answer, max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.threads = threads
        self.queue: asyncio.Queue | None = None
        self.executor = (
            ThreadPoolExecutor(1, thread_name_prefix="towerflow-batch", initializer=self._init_thread)
            if worker_thread
            else None
        )
        self.task: asyncio.Task | None = None

    def _init_thread(self) -> None:
        import faiss
        import torch

        torch.set_num_threads(self.threads)
        faiss.omp_set_num_threads(self.threads)

    async def submit(self, kind: str, request: dict):
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((kind, request, fut))
        return await fut

    def start(self) -> None:
        if self.executor is None:
            self._init_thread()
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            if self.max_wait > 0 and self.queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.max_wait)  # company for the first job, at most this long
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            jobs = [(k, r) for k, r, _ in batch]
            try:
                results = (
                    self.answer(jobs)
                    if self.executor is None
                    else await loop.run_in_executor(self.executor, self.answer, jobs)
                )
            except Exception as e:  # noqa: BLE001 - raised in every waiting request, logged there
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, _, fut), res in zip(batch, results):  # answers, or RequestErrors to reply with
                if not fut.done():
                    fut.set_result(res)
