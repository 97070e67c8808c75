"""Long manager operations as jobs: a thread each, progress 0..100, a result or an error, cancellable.

Clients get {"job": id} at once and poll the `job` op; the CLI prints VirtualBox's 0%...100% from it."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

from services.manager.errors import E_FAIL, OBJECT_NOT_FOUND, ManagerError

log = logging.getLogger("headbox.manager")

KEEP_DONE_S = 600     # a finished job is kept this long for its client to read the result


class Cancelled(ManagerError):
    def __init__(self):
        super().__init__(E_FAIL, "The operation was canceled by the user")


@dataclass
class Job:
    id: str
    what: str
    percent: int = 0
    done: bool = False
    result: object = None
    error: dict | None = None
    cancel_requested: bool = False
    finished_at: float = 0.0
    thread: threading.Thread | None = field(default=None, repr=False)

    def progress(self, percent: int) -> None:
        """Called by the work; raises Cancelled once the client asked to cancel."""
        if self.cancel_requested:
            raise Cancelled()
        self.percent = max(self.percent, min(99, int(percent)))

    def report(self, percent: int) -> None:
        """Progress from work that must not be interrupted halfway (a teleport undoes itself only on
        its own errors)."""
        self.percent = max(self.percent, min(99, int(percent)))

    def view(self) -> dict:
        return {"percent": self.percent, "done": self.done, "result": self.result, "error": self.error}


class Jobs:
    def __init__(self):
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, what: str, work) -> str:
        """Run work(job) in a thread; its return value is the job's result, a ManagerError its error."""
        with self._lock:
            self._expire()
            job = Job(id=str(next(self._ids)), what=what)
            self._jobs[job.id] = job
        job.thread = threading.Thread(target=self._run, args=(job, work), name=f"job-{job.id}-{what}",
                                      daemon=True)
        job.thread.start()
        return job.id

    def _run(self, job: Job, work) -> None:
        try:
            job.result = work(job)
            job.percent = 100
        except ManagerError as error:
            job.error = error.to_wire()
        except Exception as error:   # the daemon carries on; the client gets E_FAIL
            log.exception("job %s (%s) failed", job.id, job.what)
            job.error = ManagerError(E_FAIL, f"{job.what} failed: {error}").to_wire()
        job.finished_at = time.monotonic()
        job.done = True

    def get(self, job_id) -> Job:
        job = self._jobs.get(str(job_id))
        if job is None:
            raise ManagerError(OBJECT_NOT_FOUND, f"No job with id {job_id}")
        return job

    def cancel(self, job_id) -> None:
        self.get(job_id).cancel_requested = True

    def busy(self) -> bool:
        return any(not job.done for job in list(self._jobs.values()))

    def _expire(self) -> None:
        now = time.monotonic()
        for job_id in [j.id for j in self._jobs.values() if j.done and now - j.finished_at > KEEP_DONE_S]:
            del self._jobs[job_id]
