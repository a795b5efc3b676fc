"""What a worker answers to inspect and control requests, with no broker (worker.control)."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker import codec
from worker.control import Control, HeldTask, Stats, answer
from worker.jobs import Job, Payload


def job(task_id: str, body: bytes = b"[[], {}]") -> Job:
    return Job(f"lease-{task_id}", task_id, "tasks.add", Payload("application/json", body))


@dataclass
class FakeWorker:
    """The worker's side of worker.control.Controllable, as plain data."""

    slots: int = 2
    task_names: tuple[str, ...] = ("tasks.add",)
    queues: tuple[str, ...] = ("high", "default")
    tasks: list[HeldTask] = field(default_factory=list)
    shut_down: bool = False

    def held(self) -> list[HeldTask]:
        return self.tasks

    def stats(self) -> Stats:
        return Stats(1, "h", "thread", self.slots, (), 1.0, {}, 0, 0, 0.0, 0.0, 0, "v")

    def resize_pool(self, slots: int) -> int:
        self.slots = slots
        return slots

    def warm_shutdown(self) -> None:
        self.shut_down = True


def test_active_reserved_and_query_task_pick_from_what_the_worker_holds() -> None:
    running = HeldTask(job("a"), "active", started_at=1.0, pid=42)
    waiting = HeldTask(job("b"), "reserved")
    worker = FakeWorker(tasks=[running, waiting])
    assert answer(worker, Control("r1", "active"), 1 << 20).tasks == (running,)
    assert answer(worker, Control("r2", "reserved"), 1 << 20).tasks == (waiting,)
    found = answer(worker, Control("r3", "query_task", task_ids=("b", "zz")), 1 << 20)
    assert found.request_id == "r3" and found.tasks == (waiting,)


def test_arguments_past_the_reply_budget_are_left_out() -> None:
    big = [HeldTask(job(str(n), b"x" * 300), "active") for n in range(5)]
    reply = answer(FakeWorker(tasks=big), Control("r", "active"), 4 * 1000)
    assert [t.args_omitted for t in reply.tasks] == [False, False, False, True, True]
    summaries = codec.control_reply(reply).control_reply.tasks
    assert [s.HasField("args") for s in summaries] == [True, True, True, False, False]


def test_pool_commands_resize_and_a_shrink_keeps_one_slot() -> None:
    worker = FakeWorker(slots=2)
    grown = answer(worker, Control("g", "pool_grow", count=3), 1 << 20)
    assert (grown.concurrency, grown.message, worker.slots) == (5, "pool will grow", 5)
    refused = answer(worker, Control("s", "pool_shrink", count=5), 1 << 20)
    assert "keeps one" in refused.error and worker.slots == 5
    assert answer(worker, Control("s", "pool_shrink", count=4), 1 << 20).concurrency == 1


def test_shutdown_registered_queues_and_unknown_commands() -> None:
    worker = FakeWorker()
    assert answer(worker, Control("x", "shutdown"), 1 << 20).message == "shutting down"
    assert worker.shut_down
    assert answer(worker, Control("x", "registered"), 1 << 20).task_names == ("tasks.add",)
    assert answer(worker, Control("x", "active_queues"), 1 << 20).queues == ("high", "default")
    assert "does not know" in answer(worker, Control("x", ""), 1 << 20).error
