"""Where trials run: in this process, or on Dask distributed workers (local or a cluster).

Dask distributed is the engine for more than one process: on one machine a
``LocalCluster`` of one single-threaded worker process per core; across machines an
existing scheduler (``--cluster tcp://host:8786``) whose workers were started with the
ordinary ``dask worker`` command. The study's data (bars, windows, strategy class) is
pickled here with cloudpickle and shipped to every worker once with
``scatter(broadcast=True)``; each worker unpickles it once, and each task then carries
a chunk of parameter sets and returns their ``TrialResult``s.
"""
from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import Optional

from maotrade.errors import MAOTradeError
from maotrade.optimize.evaluate import Context, TrialResult, evaluate

log = logging.getLogger(__name__)

#: chunks of trials per worker in one batch (see ``DaskExecutor.run``).
TASKS_PER_WORKER = 2


class ClusterError(MAOTradeError):
    """The Dask cluster cannot be reached or used (names the address)."""


class InlineExecutor:
    """Runs every trial here, one after another (``--workers 1``; the reference result)."""

    description = "1 process (this one)"
    workers = 1

    def start(self, context: Context) -> None:
        """Keep the study's shared data."""
        self.context = context

    def run(self, batch: list[tuple[int, dict]]) -> list[TrialResult]:
        """Evaluate ``(number, params)`` pairs; results in the same order."""
        return [evaluate(number, params, self.context) for number, params in batch]

    def close(self) -> None:
        """Nothing to release."""


# Diagnostics nobody reads in a study, which take CPU from the workers on a small machine:
# a worker's statistical profiler samples every thread 100 times a second, holding the GIL
# the backtest needs; the client and the scheduler (in this process, beside the workers)
# time their event loops every 20 ms, and each process polls its own CPU and memory.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
}


class DaskExecutor:
    """Runs trials as Dask tasks, on a local cluster or on the scheduler at ``address``."""

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ClusterError("optimising on more than one process needs Dask "
                               "(pip install 'maotrade[optimize]')") from None
        self.cluster = None
        try:
            if address:
                self.client = Client(address, timeout="10s")
            else:
                import dask

                count = workers or os.cpu_count() or 1
                with dask.config.set(LOCAL_CLUSTER_CONFIG):
                    self.cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                                                dashboard_address=None, host="127.0.0.1",
                                                scheduler_kwargs={"dashboard": False})
                    self.client = Client(self.cluster)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.workers = len(self.client.scheduler_info()["workers"])
        if self.workers == 0:
            self.close()
            raise ClusterError(f"the Dask scheduler at {address} has no workers (start some with "
                               f"`dask worker {address}`)")
        where = address or "a local cluster"
        self.description = f"{self.workers} Dask worker(s) on {where}"
        self._packed = None
        self._token = ""

    def start(self, context: Context) -> None:
        """Ship the study's data to every worker once."""
        import cloudpickle

        _ship_by_value(context.strategy_class)
        self._token = uuid.uuid4().hex
        self._packed = self.client.scatter(cloudpickle.dumps(context), broadcast=True, hash=False)

    def run(self, batch: list[tuple[int, dict]]) -> list[TrialResult]:
        """Evaluate ``(number, params)`` pairs on the workers; results in the same order.

        Trials go in chunks, a few per worker (``TASKS_PER_WORKER``), not one task each: a
        task costs the client and the scheduler milliseconds of CPU, which on a small
        machine is taken from the workers; a few chunks per worker still even out trials
        of unequal length.
        """
        futures = [self.client.submit(evaluate_shipped_chunk, chunk, self._token, self._packed, pure=False)
                   for chunk in chunks(batch, self.workers * TASKS_PER_WORKER)]
        try:
            return [result for part in self.client.gather(futures) for result in part]
        except Exception as exc:  # a worker that cannot even load the study: say so in one line
            raise ClusterError(f"a Dask worker failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Disconnect (and stop a local cluster)."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# The study a worker process unpickled last (token -> Context): one study at a time.
_UNPACKED: dict[str, Context] = {}


def evaluate_shipped_chunk(pairs: list[tuple[int, dict]], token: str, packed: bytes) -> list[TrialResult]:
    """Run on a worker: evaluate ``(number, params)`` trials of the study shipped as ``packed``."""
    context = _UNPACKED.get(token)
    if context is None:
        import cloudpickle

        _UNPACKED.clear()
        context = _UNPACKED[token] = cloudpickle.loads(packed)
    return [evaluate(number, params, context) for number, params in pairs]


def chunks(items: list, count: int) -> list[list]:
    """``items`` cut into at most ``count`` runs of consecutive items, as even as can be."""
    count = max(1, min(count, len(items)))
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        out.append(items[start:end])
        start = end
    return [part for part in out if part]


def _ship_by_value(strategy_class: type) -> None:
    """Send a strategy's code along when its module cannot be imported by name elsewhere
    (a file given on the command line); an installed module is imported by the workers."""
    name = strategy_class.__module__
    # Asked of the import path, not of sys.modules: a file loaded by path is in sys.modules
    # here, yet no worker could import it.
    top = name.partition(".")[0]
    importable = name != "__main__" and any(
        finder.find_spec(top, None) is not None for finder in sys.meta_path if hasattr(finder, "find_spec"))
    if not importable:
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[name])


def make_executor(workers: Optional[int], cluster: Optional[str]):
    """The executor for ``--workers`` / ``--cluster``: inline for one worker, Dask otherwise."""
    if cluster:
        return DaskExecutor(address=cluster)
    if workers == 1:
        return InlineExecutor()
    return DaskExecutor(workers=workers)
