"""Work spread over processes: the phantom's cases and the pre-processing of a data set."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Any, Callable, Iterator


def in_processes(function: Callable, jobs: list[tuple], workers: int,
                 bar=None) -> Iterator[tuple[int, Any]]:
  """Calls ``function(*job)`` for every job and yields ``(index of the job, its result)``
  as each finishes, updating the progress ``bar``. With ``workers > 1`` and several jobs
  they run in that many new processes, started with "spawn" (forking a process that has
  started JAX's threads can deadlock); otherwise one after the other in this one. The
  results are the same either way; only their order may differ."""
  if workers > 1 and len(jobs) > 1:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)),
                                                mp_context=context) as pool:
      futures = {pool.submit(function, *job): i for i, job in enumerate(jobs)}
      for future in concurrent.futures.as_completed(futures):
        result = future.result()
        if bar is not None:
          bar.update()
        yield futures[future], result
    return
  for i, job in enumerate(jobs):
    result = function(*job)
    if bar is not None:
      bar.update()
    yield i, result
