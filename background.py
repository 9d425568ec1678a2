"""Background responses the gateway runs itself, at providers without native cancel.

The create view hands a Generation (providers/streaming.py) to Runner.submit(),
which stores its Response as queued (a write with run=True, which marks it as
the gateway's run). From there, in this process, and never on a request thread:

- At most BACKGROUND_THREADS threads run the jobs; the rest wait, queued. A
  thread starts when a job comes and none is free, and ends when no job waits,
  so an idle worker holds none (under gevent's worker a thread is a greenlet,
  and thousands run at once). A job first writes in_progress; if a cancel got
  there first, it never starts. It then reads the generation, numbering what
  each upstream event changes (the output itself stays with the generation).
- A watch thread, every WATCH_EVERY seconds, reads the status of every job here
  in one store call and stops those whose status turned final elsewhere (a
  cancel through any worker or host): stopping shuts the upstream connection,
  so the provider stops generating. A second thread, as often, writes each
  job's new output at most every PROGRESS_EVERY seconds and stamps the
  heartbeats of the jobs here every lease / 4 seconds: with thousands of runs
  those writes take a while, and a stop must not wait for them.
- The job writes its final Response, completed, incomplete or failed.
- As it goes, the job numbers the run's streaming events once (response.created,
  queued, in_progress, the deltas, the ending) into its log; the saver hands
  every run's new events to the store in one call a round. replay() serves
  them to any client streaming the run, from this process's memory or from
  the store in another, so every read gets the same events under the same
  sequence numbers, and a client that dropped can pick up after any of them.

Every write about a run is strict (store/), so the first final status stands:
a late write of the job cannot undo a cancel. A run whose heartbeat is older
than the lease lost its process (killed, out of memory): settle() fails it the
next time someone reads it. A run happens exactly once, in the process that
took the create; none is ever restarted.

On SIGTERM (every deploy) gunicorn gives a worker its graceful timeout to
finish. gunicorn.conf.py's hook calls stop_starting() as the signal arrives,
with that timeout: from then on no queued job starts (the watch fails them at
once), running ones go on, and any still running just before the timeout ends
(a margin early, so the writes fit) is stopped and stored failed with the
output it had, instead of being left to the lease. The worker's exit hook
calls finish(), which waits for the runs up to that moment and hands the
store their last events. The run threads are daemons (under gevent, a thread
started from a request is one anyway): the interpreter does not wait for
them, finish() does.
"""

import collections
import logging
import os
import threading
import time
import weakref

import conversations
import metrics
from owners import stored_as
from providers.errors import (
    BadGateway, GatewayTimeout, NotFound, ProviderError, RateLimited, Rejected,
)
from providers.events import ENDINGS, FINAL_EVENT, EventWriter
from schemas import contract_response
from store import DELETED, FINAL, Kept, StoreError, tombstone

log = logging.getLogger("gateway.background")

WATCH_EVERY = 0.2  # seconds; a cancel anywhere stops the generation within this and a read
PROGRESS_EVERY = 0.5  # seconds between writes of a job's output so far
FOLLOW_EVERY = 0.05  # seconds between looks at a run's events here, for a client streaming it
REPLAY_EVERY = 0.2  # seconds between looks at the store for a run elsewhere's new events
ENDING_GRACE = 5.0  # seconds a run is final in the store before its unlogged ending is lost
LOST = "its run was lost: the gateway process running it stopped (restarted or killed)"
NOT_STARTED = "its run never started: the gateway process holding it was stopping"

INTERRUPTED = ("its run was stopped: the gateway process running it was shutting down (a "
               "deploy), and the run outlived the graceful timeout")

NOTHING_KEPT = Kept(None, None)  # no input to keep, no conversation

STOPPING = threading.Event()  # this process is stopping: start no queued job
RUNNERS = weakref.WeakSet()  # this process's runners, for finish()
_deadline = [float("inf")]  # time.monotonic() by which running jobs must have ended


def stop_starting(within=None):
    """Start no more queued jobs in this process; its running ones go on, for at most
    `within` seconds (a margin less: see finish). Signal-safe."""
    if within is not None:
        _deadline[0] = time.monotonic() + within - shutdown_margin(within)
    STOPPING.set()


def shutdown_margin(within):
    """How long before a shutdown's end the jobs still running are stopped, so their
    failed Responses and last events are written before the process goes."""
    return min(5.0, max(1.0, within / 10))


def finish():
    """At a process's exit: wait for its running jobs until the deadline stop_starting()
    set, stop and fail those still running then, and hand the store their last events."""
    for runner in list(RUNNERS):
        runner.finish(_deadline[0])


def _stopping():
    return STOPPING.is_set() or not threading.main_thread().is_alive()


def _overdue():
    return STOPPING.is_set() and time.monotonic() >= _deadline[0]


class Job:
    """One run: its generation, the latest output it has not written yet, and a stop switch."""

    def __init__(self, provider, generation, kept=NOTHING_KEPT):
        self.provider, self.generation = provider, generation
        self.kept = kept  # the input to keep once the provider accepts it (a store.Kept)
        self.response_id = generation.response_id
        self.running = False  # started, and not yet holding its final Response
        self.grown = 0  # how many upstream events have changed its output
        self.saved = 0  # the value of `grown` its last progress write had
        self.saved_at = 0.0
        self.stopped = False
        self.interrupted = False  # stopped by a shutdown, not a cancel
        self.ending_logged = False
        self.ended = threading.Event()  # set once the job is done here, however it ended
        self.writer = EventWriter()  # numbers the run's streaming events, once for every reader
        self.log = []  # those events; an event's index is its sequence number
        self.logged = 0  # how many of them the store has

    def stop(self):
        """Stop the run: it never starts, or its upstream connection is shut now."""
        self.stopped = True
        self.generation.close()


class Runner:
    """Runs this process's background responses; one per app, threads per process."""

    def __init__(self, store, threads, lease, clock=time.time, watch_every=WATCH_EVERY):
        self.store, self.threads, self.lease = store, threads, lease
        self.clock, self.watch_every = clock, watch_every
        self.on_end = None  # told (response id, status) as a run's ending is stored
        self._pid = None  # threads and queues belong to one process: gunicorn forks after app creation
        self._setup = threading.Lock()  # never held in gunicorn's master, so safe to fork
        RUNNERS.add(self)

    def _here(self):
        """Set up this process's queue, jobs and watch thread, once per process."""
        if self._pid == os.getpid():
            return
        with self._setup:
            if self._pid != os.getpid():  # another request thread may have just done it
                self._set_up()

    def _set_up(self):
        self._lock = threading.Lock()
        self._jobs = {}  # response_id -> Job, queued or running here
        self._queue = collections.deque()  # jobs no thread has taken yet
        self._workers = 0  # threads running jobs here
        self._ending = []  # jobs done here whose last events the store may not have yet
        self._next_heartbeat = 0.0
        self._pid = os.getpid()
        if self.watch_every:
            # Two threads, so that writing thousands of runs' progress never delays a stop.
            for step in (self.stop_cancelled, self.save_progress):
                threading.Thread(target=self._every_round, args=(step,),
                                 name=f"background-{step.__name__}", daemon=True).start()

    def submit(self, provider, generation, owner=None, kept=NOTHING_KEPT):
        """Store the generation's Response as queued, as `owner`'s (owners.py), then run it
        in the background; its input, `kept` (a store.Kept), is kept once the provider
        has accepted it, and it is appended to its conversation, if it has one, as it ends.

        Returns the stored entry; raises StoreError, and runs nothing, if the
        store cannot be written: a run nobody could read would be lost.
        """
        self._here()
        entry = self._record(generation.response_id, provider, generation.queued(),
                             stored_as(owner))
        job = Job(provider, generation, kept)
        job.log += [*job.writer.start(entry.body),
                    job.writer.event("response.queued", response=entry.body)]
        with self._lock:  # with _work's look for a next job: no job is left with no thread
            self._jobs[job.response_id] = job
            self._queue.append(job)
            if self._workers < self.threads:
                self._workers += 1
                threading.Thread(target=self._work, name="background-run", daemon=True).start()
        return entry

    def running(self):
        """The ids of the runs this process holds, queued or running."""
        self._here()
        with self._lock:
            return set(self._jobs)

    def replay(self, response_id, after, stopped):
        """A run's streaming events numbered after `after`, then each as the run makes it,
        to its ending event; stops early once `stopped` is set. The same events, under the
        same numbers, whoever reads them from whichever process. Raises StoreError."""
        self._here()
        job, final_since = self._jobs.get(response_id), None
        while not stopped.is_set():
            events = job.log[after + 1:] if job else self.store.events(response_id, after)
            for event in events:
                yield event
                after = event["sequence_number"]
                if event["type"] in ENDINGS:
                    return
            if job:  # here: its events are in memory, and the last comes before it ends
                if job.ended.is_set() and len(job.log) <= after + 1:
                    job = None  # ended with no ending of its own (deleted): ask the store
                else:
                    job.ended.wait(FOLLOW_EVERY)
                continue
            entry = self.store.get(response_id)
            if entry is None or entry.status == DELETED:
                return
            if entry.status in FINAL or self.clock() - entry.heartbeat_at > self.lease:
                final_since = final_since or time.monotonic()
                if time.monotonic() - final_since > ENDING_GRACE:  # its process is gone
                    body = self.settle(response_id, entry).body
                    yield {"type": FINAL_EVENT[body["status"]], "sequence_number": after + 1,
                           "response": body}
                    return
            time.sleep(REPLAY_EVERY)

    def settle(self, response_id, entry):
        """A gateway run's entry as it stands, failed first if its heartbeat is past the lease."""
        if entry.status in FINAL or self.clock() - entry.heartbeat_at <= self.lease:
            return entry
        return self._fail(response_id, entry.provider, entry.body, "run_lost", LOST)

    def cancel(self, response_id, entry):
        """Cancel a gateway run: one strict write, then stop it here if it runs here.

        Returns the entry as stored: cancelled, or the final status it already had.
        """
        self._here()
        entry = self.settle(response_id, entry)
        job = self._jobs.get(response_id)
        if entry.status not in FINAL:
            body = job.generation.so_far() if job and job.running else entry.body  # freshest
            entry = self._record(response_id, entry.provider, {**body, "status": "cancelled"})
        if job and entry.status == "cancelled":
            job.stop()
        return entry

    def delete(self, response_id, entry):
        """Delete a gateway run: a tombstone no later write of the run undoes, then stop it
        here if it runs here (the watch of whichever process runs it stops it there)."""
        self._here()
        self.store.record(response_id, entry.provider, tombstone(response_id))
        job = self._jobs.get(response_id)
        if job:
            job.stop()

    def tick(self):
        """One round of the watch and of the saver: stop what was cancelled, then write
        progress and heartbeats."""
        self.stop_cancelled()
        self.save_progress()

    def stop_cancelled(self):
        """Stop the jobs here whose status turned final elsewhere (a cancel anywhere); while
        the process stops, fail queued jobs, and running ones once they are overdue."""
        if _stopping():
            self._drain()
        if _overdue():
            self._interrupt()
        jobs = self._current()
        if jobs:
            for response_id, status in self.store.statuses(jobs).items():
                if status in FINAL and not jobs[response_id].stopped:
                    jobs[response_id].stop()

    def save_progress(self):
        """Write each job's new output (at most every PROGRESS_EVERY), the runs' new events
        (all in one store call) and the heartbeats."""
        jobs, now = self._current(), self.clock()
        self._log(jobs.values())
        for job in jobs.values():
            grown = job.grown
            if (job.running and grown != job.saved and not job.stopped
                    and now - job.saved_at >= PROGRESS_EVERY):
                job.saved, job.saved_at = grown, now
                self._write(job, job.generation.so_far())
        if jobs and now >= self._next_heartbeat:
            self._next_heartbeat = now + self.lease / 4
            self.store.heartbeat(list(jobs))

    def _log(self, jobs):
        """Hand the store, in one call, every new event of these jobs and of those ended."""
        with self._lock:
            pending = [job for job in [*jobs, *self._ending] if len(job.log) > job.logged]
            self._ending = []
        batch = [(job.response_id, job.logged, job.log[job.logged:]) for job in pending]
        try:
            self.store.append_events(batch)
        except StoreError:
            with self._lock:  # the ended ones are tried again next round
                self._ending += [job for job in pending if job.ended.is_set()]
            raise
        for job, (_, first, events) in zip(pending, batch):
            job.logged = first + len(events)

    def _current(self):
        with self._lock:
            return dict(self._jobs)

    def _every_round(self, step):
        """Run one step of the watch every watch_every seconds, whatever a round raises."""
        while True:
            time.sleep(self.watch_every)
            try:
                step()
            except StoreError as exc:
                log.warning("background %s: %s", step.__name__, exc)
            except Exception:  # the watch must outlive any one bad round
                log.exception("background %s failed a round", step.__name__)

    def _work(self):
        """A run thread: run queued jobs until none waits."""
        while True:
            with self._lock:
                if not self._queue:
                    self._workers -= 1
                    return
                job = self._queue.popleft()
            try:
                if _stopping():
                    self._never_start(job)
                else:
                    self._run(job)
            except StoreError as exc:
                log.warning("background response %s at %s: %s", job.response_id, job.provider, exc)
            except Exception:
                log.exception("background response %s at %s failed", job.response_id, job.provider)
            finally:
                self._forget(job)

    def finish(self, deadline):
        """Wait for this process's jobs until `deadline` (time.monotonic()); then stop and
        fail those still running, and hand the store every run's last events."""
        if self._pid != os.getpid():
            return  # this process ran nothing
        self._drain()
        running = self._current().values()
        for job in running:
            job.ended.wait(max(0.0, deadline - time.monotonic()))
        stopped = self._interrupt()
        if stopped:  # worth an operator's eye: raise the graceful timeout for longer runs
            log.warning("shutting down: %d background runs finished, %d stopped at the "
                        "graceful timeout and stored failed", len(running) - stopped, stopped)
        try:
            self._log(self._current().values())  # and those that ended
        except StoreError as exc:
            log.warning("background runs' last events were not stored: %s", exc)

    def _interrupt(self):
        """Stop every job still running here and store it failed, with the output it had:
        the process is going, and a run left to the lease would wait for it to pass.
        Returns how many it stopped."""
        stopped = 0
        for job in self._current().values():
            if job.ended.is_set() or job.interrupted:
                continue
            stopped += 1
            job.interrupted = True
            body = job.generation.so_far() if job.running else job.generation.queued()
            job.stop()
            try:
                self._end(job, self._fail(job.response_id, job.provider, body, "run_lost",
                                          INTERRUPTED))
            except StoreError as exc:
                log.warning("background response %s at %s: %s", job.response_id,
                            job.provider, exc)
        return stopped

    def _drain(self):
        """Fail every job still queued here: the process is stopping."""
        while True:
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.popleft()
            try:
                self._never_start(job)
            finally:
                self._forget(job)

    def _forget(self, job):
        """The job is done here, however it ended: drop it, and tell whoever follows it."""
        with self._lock:
            self._jobs.pop(job.response_id, None)
            self._ending.append(job)
        job.ended.set()

    def _end(self, job, entry):
        """Write the events that end the run's stream, as the store holds its ending, and
        append the run to its conversation if it has one (once: the job and a shutdown
        may both come to it)."""
        with self._lock:
            if job.ending_logged or entry is None or entry.status not in FINAL or \
                    entry.status == DELETED:
                return
            job.ending_logged = True
        job.log += job.writer.finish(entry.body)
        try:
            conversations.turn_ended(self.store, job.response_id, entry.body, job.kept)
        except StoreError as exc:
            log.warning("background response %s was not added to conversation %s: %s",
                        job.response_id, job.kept.conversation, exc)
        if self.on_end:  # its webhook, at once (webhooks.py watches for it anyway)
            try:
                self.on_end(job.response_id, entry.status)
            except StoreError as exc:
                log.warning("background response %s: its webhook is left to the watch: %s",
                            job.response_id, exc)

    def _never_start(self, job):
        self._end(job, self._fail(job.response_id, job.provider, job.generation.queued(),
                                  "run_lost", NOT_STARTED))
        metrics.count_run(job.provider, "failed")

    def _run(self, job):
        """Run one job to its end, unless it is stopped first."""
        generation = job.generation
        started = {**generation.queued(), "status": "in_progress"}
        entry = None if job.stopped else self._write(job, started)
        if entry is None or entry.status != "in_progress":
            self._end(job, entry or self.store.get(job.response_id))
            return  # cancelled while queued: it never starts
        job.log.append(job.writer.event("response.in_progress", response=entry.body))
        job.saved_at, job.running = self.clock(), True
        try:
            generation.open()  # the provider's refusal raises here, and keeps no input
            self._keep_input(job)
            for changes in generation.changes():
                job.log += job.writer.apply(changes)
                job.grown += 1
            final = None if generation.closed else generation.final()
        except ProviderError as exc:
            final = failed(generation.so_far(), run_error(exc))
        except Exception:
            log.exception("background response %s at %s broke", job.response_id, job.provider)
            final = failed(generation.so_far(), {"code": "internal_error",
                                                 "message": "the gateway failed this run"})
        job.running = False
        if job.stopped or final is None:
            metrics.count_run(job.provider, "failed" if job.interrupted else "cancelled")
            self._end(job, self.store.get(job.response_id))
            return  # the cancel wrote the final state
        stored = self._write(job, final)
        self._end(job, stored)
        metrics.count_run(job.provider, stored.status)
        if stored.status == "failed":
            log.warning("background response %s at %s failed: %s", job.response_id,
                        job.provider, (stored.body.get("error") or {}).get("message"))

    def _keep_input(self, job):
        """Keep a run's input, now that its provider took it; a store that is down costs
        only the list (and the chain)."""
        kept = job.kept
        if kept.items is None:
            return
        try:
            self.store.keep_input(job.response_id, kept.items, kept.previous, kept.conversation)
        except StoreError as exc:
            log.warning("background response %s: its input was not stored: %s",
                        job.response_id, exc)

    def _write(self, job, response):
        """Write a run's Response; stop the job if the store holds another final status."""
        entry = self._record(job.response_id, job.provider, response)
        if entry.status in FINAL and entry.status != response["status"]:
            job.stop()
        return entry

    def _fail(self, response_id, provider, body, code, message):
        return self._record(response_id, provider, failed(body, {"code": code, "message": message}))

    def _record(self, response_id, provider, body, owner=None):
        """Store a run's Response in the contract's shape (strict: a final status stands);
        only the first write's owner counts."""
        try:
            response = contract_response(body, response_id, provider)
        except BadGateway as exc:  # the provider's stream held a malformed Response
            response = contract_response(failed({"output": []}, run_error(exc)), response_id,
                                         provider)
        return self.store.record(response_id, provider, response, run=True, owner=owner)


def failed(body, error):
    """The Response `body` as failed, with this error and the output it had."""
    return {**body, "status": "failed", "error": error}


def run_error(exc):
    """The Response's error for a provider failure: a code, and the provider's message."""
    if isinstance(exc, Rejected):
        code = exc.code or "invalid_request"
    elif isinstance(exc, RateLimited):
        code = "rate_limit_exceeded"
    elif isinstance(exc, NotFound):
        code = "not_found"
    elif isinstance(exc, GatewayTimeout):
        code = "upstream_timeout"
    else:
        code = "upstream_error"
    return {"code": code, "message": exc.message}
