"""The worker: one pool, one broker session at a time, reconnects, and graceful shutdown.

`Worker.run()` starts the pool (before any gRPC channel exists), then keeps a session with the
broker open: it grants credit for its free slots plus an adaptive prefetch (`worker.prefetch`),
starts assigned jobs in the pool as slots free up, and reports acks, outcomes, heartbeats and
custom states through the `ReportBuffer`, each checked against the broker's limits first
(`worker.limits`: an oversize result fails its task instead of ending the session). A lost
connection is
retried with capped exponential backoff while running tasks carry on; their outcomes go out on
the next session, which names their leases in `Hello.held_lease_ids`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from functools import partial
from importlib import metadata

import grpc

from celeriac.connection import open_aio_channel
from celeriac.rates import rate_text
from client import signals
from worker import codec, control, tasklog
from worker.config import WorkerConfig, grpc_target, worker_id
from worker.errors import BrokerUnavailable, NotStarted, WorkerError
from worker.execution import ExecutionSettings, announce_revoked, resolve_limits, revoked_outcome
from worker.jobs import Job, Outcome, OutcomeState, TaskEvent
from worker.limits import PayloadLimits, fit_event, fit_outcome
from worker.loader import Registry
from worker.pools import Pool
from worker.prefetch import Prefetch
from worker.reports import ReportBuffer
from worker.session import Session

logger = logging.getLogger(__name__)

# How long to wait for the broker's Welcome, and for it to end the stream after a half-close.
_WELCOME_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0
# The broker bounds what it sends by its own limit (Welcome.max_message_bytes, which may be above
# gRPC's default 4 MiB); a lower limit here would end the session on a large assignment.
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    # No bandwidth probing, a fixed 1 MiB stream window (why: broker/service/server.py).
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1 << 20),
)


def _channel_options(config: WorkerConfig) -> tuple[tuple[str, int], ...]:
    """The channel's options, with gRPC's reconnect backoff capped like the worker's own.

    gRPC's default backoff grows to two minutes: a worker then found a restarted broker 30-50 s
    late. Capped at `reconnect_max`, it reconnects within about that long (plus gRPC's 20%
    jitter) of the broker listening again. The minimum is the time one connection attempt may
    take (gRPC's "min reconnect backoff" is its connect timeout), so it is the cap as well: a
    refused connection fails at once, and a slow link still gets time to connect.
    """
    initial_ms = max(1, round(config.reconnect_initial * 1000))
    cap_ms = max(initial_ms, round(config.reconnect_max * 1000))
    return (
        *_CHANNEL_OPTIONS,
        ("grpc.initial_reconnect_backoff_ms", initial_ms),
        ("grpc.min_reconnect_backoff_ms", cap_ms),
        ("grpc.max_reconnect_backoff_ms", cap_ms),
    )


def _version() -> str:
    try:
        return metadata.version("celeriac")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class Worker:
    """Runs tasks from the broker in a pool until told to stop."""

    def __init__(self, config: WorkerConfig, registry: Registry, pool: Pool, address: str) -> None:
        """Create a worker.

        Args:
            config: The worker's settings.
            registry: The tasks it can run.
            pool: Where tasks run (not started yet; `run()` starts it).
            address: The broker address (already resolved from flags, env and the app).
        """
        self.config = config
        self.registry = registry
        self.address = address
        self.worker_id = worker_id(config)
        self._pool = pool
        self._prefetch = Prefetch(
            pool.slots, config.prefetch_max, config.prefetch_hold, config.prefetch_window
        )
        self._buffer = ReportBuffer(self._flush, busy=self._prefetch.__bool__)
        self._session: Session | None = None
        self._limits = PayloadLimits()  # the broker's defaults until its Welcome says otherwise
        self._running: dict[str, Job] = {}
        # When each running task started, kept only while per-task log lines are on (tasklog).
        self._started_at: dict[str, float] = {}
        self._hold_timer: asyncio.TimerHandle | None = None
        self._cancelled: dict[str, str] = {}
        self._accepting = True
        self._draining = False
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._signals = 0
        self._welcomed_once = False
        self._session_welcomed = False
        # For inspect: when each running task started (wall time), what finished, since when.
        self._started_wall: dict[str, float] = {}
        self._finished = control.TaskCounts()
        self._born = time.monotonic()

    def on_task_event(self, event: TaskEvent) -> None:
        """Forward a running task's heartbeat or custom state to the broker (loop thread only).

        One whose payload is over the broker's limit is cut down or dropped (`worker.limits`).
        """
        fitted = fit_event(event, self._limits.largest_body)
        if fitted is not None:
            self._buffer.add_event(fitted)

    async def run(self, *, handle_signals: bool = False) -> bool:
        """Run until `shutdown()` (or SIGTERM/SIGINT when `handle_signals`).

        Returns:
            True after a warm shutdown, False after a cold one.

        Raises:
            SessionRefused: The broker refused the session.
            WorkerError: The pool could not start.
        """
        loop = asyncio.get_running_loop()
        # Handlers first: a signal while the pool starts (children may take long in their
        # worker_process_init) must stop the children it started, not kill this process alone.
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.shutdown)
        try:
            if await self._start_pool():
                await self._serve()
        finally:
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            await self._pool.close(0 if self._signals > 1 else self.config.shutdown_grace)
        return self._signals < 2

    async def _start_pool(self) -> bool:
        """Start the pool, unless a shutdown comes first; True when it started."""
        starting = asyncio.ensure_future(self._pool.start())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()  # nothing runs yet: close() stops the children begun
                await asyncio.gather(starting, return_exceptions=True)
        if starting.cancelled():
            logger.info("worker stopped before its pool was ready")
            return False
        starting.result()  # the pool's own failure, if any
        return True

    async def _serve(self) -> None:
        # The channel only after the pool: children must not inherit gRPC state.
        channel = open_aio_channel(
            grpc_target(self.address),
            self.config.security(self.address),
            _channel_options(self.config),
        )
        try:
            await self._keep_connected(channel)
        finally:
            await channel.close(None)

    def shutdown(self) -> None:
        """Warm shutdown on the first call, cold on the second (kill running tasks now)."""
        self._signals += 1
        if self._signals == 1:
            logger.warning(
                "worker shutting down (warm): finishing %d running tasks within %ss; "
                "signal again for a cold shutdown",
                len(self._running),
                self.config.shutdown_grace,
            )
            self._accepting = False
            self._return_buffered()
            self._stopping.set()
        else:
            logger.warning(
                "worker shutting down (cold): killing %d running tasks", len(self._running)
            )
            asyncio.get_running_loop().create_task(self._pool.close(0))

    async def _keep_connected(self, channel: grpc.aio.Channel) -> None:
        delay = self.config.reconnect_initial
        while not self._stopping.is_set():
            try:
                await self._run_session(channel)
            except BrokerUnavailable as exc:
                if self._stopping.is_set():
                    break
                if self._session_welcomed:
                    delay = self.config.reconnect_initial
                logger.warning("%s; reconnecting to %s in %.1fs", exc, self.address, delay)
            await self._pause(channel, delay)
            delay = min(delay * 2, self.config.reconnect_max)

    async def _pause(self, channel: grpc.aio.Channel, delay: float) -> None:
        """Wait `delay` seconds before the next session, or less when reconnecting.

        When the connection itself is down, gRPC keeps trying to reconnect on its own schedule
        (capped alike, see `_channel_options`), and the next session starts as soon as it is
        back rather than when `delay` ends. A broker that answers but ends the session (one that
        is shutting down) gets the whole delay. A shutdown ends the wait at once.
        """
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._stopping.wait())]
        if channel.get_state() is not grpc.ChannelConnectivity.READY:
            waits.append(asyncio.ensure_future(channel.channel_ready()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _run_session(self, channel: grpc.aio.Channel) -> None:
        """Run one session: returns after a warm shutdown, raises when the stream ends."""
        self._session_welcomed = False
        session = Session(channel)
        hello = codec.hello(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.config.queues,
            task_names=self.registry.tasks,
            # Every task's, "" for none: a limit removed from the code is removed at the broker.
            rate_limits={
                name: rate_text(task.options.rate_limit)
                for name, task in self.registry.tasks.items()
            },
            periodic_tasks=self.registry.periodic,
            concurrency=self._pool.slots,
            pool=self.config.pool,
            version=_version(),
            held_lease_ids=[
                *self._running,
                *self._prefetch.lease_ids,
                *self._buffer.pending_outcome_leases(),
            ],
        )
        try:
            welcome = await session.open(hello, _WELCOME_TIMEOUT)
            self._session_welcomed = True
            self._on_welcome(session, welcome)
            reader = asyncio.ensure_future(self._read(session))
            stopper = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    reader.result()  # the stream ended or broke: raises BrokerUnavailable
                else:
                    await self._finish(session, reader)
            finally:
                stopper.cancel()
                reader.cancel()
                if reader.done() and not reader.cancelled():
                    reader.exception()  # retrieved: it was handled (or re-raised) above
        finally:
            self._session = None
            session.abort()

    def _on_welcome(self, session: Session, welcome: codec.Welcome) -> None:
        self._session = session
        self._limits = welcome.limits
        if not self._stopping.is_set():
            self._accepting = True
            self._draining = False
        kept = set(welcome.kept_lease_ids)
        stale = set(self._running) - kept
        if stale:
            logger.warning(
                "broker did not keep %d running leases; their results will be dropped", len(stale)
            )
        dropped = self._prefetch.keep_only(kept)
        if dropped:
            logger.info("dropping %d buffered tasks the broker gave to others", len(dropped))
        if welcome.ping_timeout > 0:
            self._buffer.keep_sent_for = 2 * welcome.ping_timeout
        self._buffer.acks_outcomes = welcome.acks_outcomes
        resent = self._buffer.resend_unconfirmed(welcome.kept_lease_ids)
        if resent:
            logger.warning("sending %d outcomes again: the broker never received them", resent)
        self._prefetch.new_session()
        self._buffer.reset_credit(0)
        self._pump()
        self._top_up()
        queues = ",".join(self.config.queues)
        what = "worker reconnected" if self._welcomed_once else "worker ready"
        logger.info(
            "%s id=%s broker=%s pool=%s concurrency=%d queues=%s",
            what,
            self.worker_id,
            self.address,
            self.config.pool,
            self._pool.slots,
            queues,
        )
        logger.debug("session=%s broker_version=%s", welcome.session_id, welcome.broker_version)
        if not self._welcomed_once:
            signals.worker_ready.send(sender=self)
        self._welcomed_once = True
        self._flush()

    async def _read(self, session: Session) -> None:
        async for event in session.events():
            self._dispatch(session, event)

    def _dispatch(self, session: Session, event: codec.BrokerEvent) -> None:
        match event:
            case codec.Assign(jobs, outcomes_taken):
                if outcomes_taken:
                    self._buffer.acknowledge(outcomes_taken)
                self._assigned(jobs)
            case codec.Ping(nonce):
                session.send(codec.pong(nonce))
            case codec.CancelJobs(lease_ids, terminate, reason):
                self._cancel(lease_ids, terminate, reason)
            case codec.Drain(reason):
                logger.warning(
                    "broker asked to drain (%s): finishing %d running tasks",
                    reason,
                    len(self._running),
                )
                self._accepting = False
                self._draining = True
                self._return_buffered()
                self._close_when_idle(session)
            case codec.OutcomesTaken(lease_ids):
                self._buffer.acknowledge(lease_ids)
            case codec.Rejected(rejections):
                for lease_id, reason in rejections:
                    logger.warning(
                        "broker rejected lease=%s (%s); its report was dropped", lease_id, reason
                    )
                self._buffer.acknowledge(lease_id for lease_id, _ in rejections)
            case control.Control():
                reply = control.answer(self, event, self._limits.max_message_bytes)
                session.send(codec.control_reply(reply))
            case codec.Welcome():
                logger.warning("ignoring an unexpected second Welcome")

    def _assigned(self, jobs: tuple[Job, ...]) -> None:
        now = asyncio.get_running_loop().time()
        for job in jobs:
            self._prefetch.assigned(job, now)
            tasklog.received(job)
        if not self._accepting:
            self._return_buffered()
            return
        self._pump()
        if self._prefetch.held_back:
            self._return_buffered()  # stale prefetch credit: the broker can run them elsewhere
        elif self._prefetch:
            self._arm_hold_timer()

    def _pump(self) -> None:
        """Start buffered jobs while slots are free (only with a live session)."""
        prefetch = self._prefetch
        while (
            self._accepting
            and self._session is not None
            and len(self._running) < self._pool.capacity
        ):
            job = prefetch.pop()
            if job is None:
                return
            self._start(job)

    def _top_up(self) -> None:
        """Grant whatever credit the prefetch policy wants out now."""
        if not self._accepting or self._session is None:
            return
        now = asyncio.get_running_loop().time()
        credit = self._prefetch.credit_to_grant(len(self._running), now)
        if credit:
            self._prefetch.granted(credit)
            self._buffer.add_credit(credit)

    def _return_buffered(self) -> None:
        for job in self._prefetch.take_all():
            self._buffer.add_returned(job.lease_id)

    def _arm_hold_timer(self) -> None:
        due = self._prefetch.oldest_due()
        if self._hold_timer is None and due is not None:
            self._hold_timer = asyncio.get_running_loop().call_at(due, self._on_hold_timer)

    def _on_hold_timer(self) -> None:
        self._hold_timer = None
        expired = self._prefetch.expire(asyncio.get_running_loop().time())
        if expired:
            logger.info(
                "handing back %d buffered tasks that waited over %ss for a slot",
                len(expired),
                self._prefetch.hold,
            )
            for job in expired:
                self._buffer.add_returned(job.lease_id)
            # Stale credit would bring them (or others) straight back to this busy worker.
            self._buffer.withdraw_credit()
            self._prefetch.withdrawn()
            self._top_up()
        self._arm_hold_timer()

    def _start(self, job: Job) -> None:
        job = resolve_limits(
            job, self.registry.tasks, self.config.time_limit, self.config.soft_time_limit
        )
        try:
            future = self._pool.submit(job)
        except WorkerError as exc:
            logger.error("returning lease=%s: %s", job.lease_id, exc)
            self._buffer.add_returned(job.lease_id)
            return
        logger.debug("task started id=%s name=%s attempt=%d", job.task_id, job.name, job.attempt)
        started = tasklog.now()
        if started is not None:
            self._started_at[job.lease_id] = started
        self._running[job.lease_id] = job
        self._started_wall[job.lease_id] = time.time()
        self._idle.clear()
        self._buffer.add_started(job.lease_id)
        future.add_done_callback(partial(self._on_finished, job))

    def _on_finished(self, job: Job, future: asyncio.Future[Outcome]) -> None:
        self._running.pop(job.lease_id, None)
        self._started_wall.pop(job.lease_id, None)
        started = self._started_at.pop(job.lease_id, None) if self._started_at else None
        if not future.cancelled() and isinstance(future.exception(), NotStarted):
            self._rebuffer(job)
            return
        reason = self._cancelled.pop(job.lease_id, None)
        self._prefetch.finished(asyncio.get_running_loop().time())
        self._pump()
        if not self._running:
            self._idle.set()
        if future.cancelled():
            return  # stopped by a shutdown: no outcome, the broker redelivers the task
        outcome = future.result()
        self._finished.add(job.name)
        if reason is not None and outcome.state is not OutcomeState.REVOKED:
            outcome = revoked_outcome(job, reason)
        # Whatever the pool checked: nothing oversize may reach a Report (see worker.limits).
        outcome = fit_outcome(job, outcome, self._limits)
        logger.debug(
            "task finished id=%s name=%s state=%s", job.task_id, job.name, outcome.state.value
        )
        tasklog.finished(job, outcome, started)
        self._buffer.add_outcome(outcome, credit=0)
        self._top_up()
        if not self._running:
            # The last running task: no other outcome can join this Report, so it goes now
            # rather than a loop turn later (a lone task's round trip is one turn shorter).
            self._buffer.flush_now()
        if self._draining and self._session is not None:
            self._close_when_idle(self._session)

    def _rebuffer(self, job: Job) -> None:
        """Buffer a job the pool gave back unstarted again, first in line.

        When the worker takes no more work, the job goes back to the broker at once instead.
        """
        reason = self._cancelled.pop(job.lease_id, None)
        if reason is not None:
            self._buffer.add_outcome(revoked_outcome(job, reason), credit=0)
        elif self._accepting and self._session is not None:
            self._prefetch.push_front(job, asyncio.get_running_loop().time())
            self._pump()
            self._arm_hold_timer()
        else:
            self._buffer.add_returned(job.lease_id)
        if not self._running:
            self._idle.set()

    def _cancel(self, lease_ids: tuple[str, ...], terminate: bool, reason: str) -> None:
        for lease_id in lease_ids:
            if (buffered := self._prefetch.remove(lease_id)) is not None:
                logger.warning("cancel lease=%s before it started: %s", lease_id, reason)
                self._buffer.add_outcome(revoked_outcome(buffered, reason or "revoked"), credit=0)
                self._top_up()
                self._announce_revoked(buffered, terminated=False)
                continue
            job = self._running.get(lease_id)
            if job is None:
                continue
            logger.warning("cancel lease=%s terminate=%s reason=%s", lease_id, terminate, reason)
            self._cancelled[lease_id] = reason or "revoked"
            terminated = terminate and self._pool.terminate(lease_id, reason or "terminated")
            self._announce_revoked(job, terminated=terminated)

    def _announce_revoked(self, job: Job, *, terminated: bool) -> None:
        """``task_revoked`` in this process; ``signum`` is what the process pool kills with."""
        killed_with = signal.SIGKILL if terminated and self.config.pool == "process" else None
        settings = ExecutionSettings(self.worker_id, self.config.allow_pickle)
        task = self.registry.tasks.get(job.name)
        announce_revoked(
            job, task, settings, terminated=terminated, signum=killed_with, expired=False
        )

    # -- inspect and control (worker.control.Controllable) ------------------------------------

    @property
    def slots(self) -> int:
        """The pool's execution slots now."""
        return self._pool.slots

    @property
    def task_names(self) -> tuple[str, ...]:
        """The registered task names, sorted."""
        return tuple(sorted(self.registry.tasks))

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues consumed, in order."""
        return tuple(self.config.queues)

    def held(self) -> list[control.HeldTask]:
        """The running tasks, then the buffered ones, in the order they were taken."""
        pool, started = self._pool, self._started_wall
        running = [
            control.HeldTask(job, "active", started.get(lease), pool.pid_of(lease))
            for lease, job in self._running.items()
        ]
        return running + [control.HeldTask(job, "reserved") for job in self._prefetch.jobs]

    def stats(self) -> control.Stats:
        """The worker's figures now."""
        user, system, rss = control.process_figures()
        return control.Stats(
            pid=os.getpid(),
            hostname=socket.gethostname(),
            pool=self.config.pool,
            concurrency=self._pool.slots,
            child_pids=self._pool.pids,
            uptime=time.monotonic() - self._born,
            total=dict(self._finished.by_name),
            reserved=len(self._prefetch),
            active=len(self._running),
            user_cpu=user,
            system_cpu=system,
            max_rss_kb=rss,
            version=_version(),
        )

    def warm_shutdown(self) -> None:
        """A warm shutdown, unless one has begun (a second control request is not a signal)."""
        if self._signals == 0:
            self.shutdown()

    def resize_pool(self, slots: int) -> int:
        """Change the pool's slots, and the credit this worker grants with them."""
        shrinking = slots < self._pool.slots
        self._pool.resize(slots)
        self._prefetch.slots = slots
        logger.warning("pool resized to %d slots by a control request", slots)
        if shrinking and self._session is not None:
            # The broker may hold credit for slots that are gone: take it back, grant anew.
            self._buffer.withdraw_credit()
            self._prefetch.withdrawn()
        self._pump()
        self._top_up()
        self._flush()
        return slots

    def _close_when_idle(self, session: Session) -> None:
        if not self._running:
            self._flush()
            session.close()

    async def _finish(self, session: Session, reader: asyncio.Future[None]) -> None:
        """Warm shutdown with a live session: let running tasks finish, report, half-close."""
        if self._running:
            idle = asyncio.ensure_future(self._wait_idle())
            await asyncio.wait(
                {idle, reader},
                timeout=self.config.shutdown_grace,
                return_when=asyncio.FIRST_COMPLETED,
            )
            idle.cancel()
        if reader.done():
            return
        # Past the grace: stop what still runs. Those leases get no outcome; the broker
        # requeues them when this stream ends.
        await self._pool.close(0)
        self._flush()
        session.close()
        # The broker ends the stream once it has read everything up to our half-close.
        await asyncio.wait({reader}, timeout=_CLOSE_TIMEOUT)

    async def _wait_idle(self) -> None:
        await self._idle.wait()

    def _flush(self) -> None:
        if self._session is None:
            return  # kept until the next session's Welcome
        batch = self._buffer.take()
        if batch is not None:
            for message in codec.reports(batch, self._limits.max_message_bytes):
                self._session.send(message)
