"""ReadyQueue: priority lanes, FIFO within a lane, lazy removal marked on the record itself."""

from __future__ import annotations

from broker.core.model import TaskRecord
from broker.core.queues import ReadyQueue
from tests.broker.core_support import spec


def record(task_id: str, priority: int = 0) -> TaskRecord:
    return TaskRecord(task_id, spec(task_id=task_id, priority=priority))


def filled(*records: TaskRecord) -> ReadyQueue:
    queue = ReadyQueue("q")
    for each in records:
        queue.push(each)
    return queue


def popped(queue: ReadyQueue) -> list[str]:
    ids = []
    while (next_record := queue.pop()) is not None:
        ids.append(next_record.task_id)
    return ids


def test_the_most_urgent_priority_pops_first_and_fifo_holds_within_one() -> None:
    queue = ReadyQueue("q")
    for task_id, priority in [("a", 0), ("b", 9), ("c", 0), ("d", 5), ("e", 9)]:
        queue.push(record(task_id, priority))
    assert len(queue) == 5
    assert popped(queue) == ["b", "e", "d", "a", "c"]
    assert len(queue) == 0


def test_a_redelivery_goes_to_the_front_of_its_lane() -> None:
    queue = ReadyQueue("q")
    queue.push(record("a"))
    queue.push(record("b"))
    queue.push(record("again"), front=True)
    assert popped(queue) == ["again", "a", "b"]


def test_a_discarded_task_leaves_the_depth_at_once_and_is_skipped_later() -> None:
    a, b, c = record("a"), record("b"), record("c")
    queue = filled(a, b, c)
    queue.discard(b)
    queue.discard(b)  # twice is once
    assert len(queue) == 2
    assert [each.task_id for each in queue] == ["a", "c"]
    assert popped(queue) == ["a", "c"]


def test_a_discarded_task_queued_again_is_delivered_once_at_its_new_place() -> None:
    # No broker flow does this today (a task removed while queued stays finished); the queue
    # must still never hand out its stale entry as well as the new one.
    a, b, c = record("a"), record("b"), record("c")
    queue = filled(a, b, c)
    queue.discard(a)
    queue.push(a)
    assert len(queue) == 3
    assert popped(queue) == ["b", "c", "a"]
    assert queue.pop() is None


def test_drain_returns_the_live_tasks_most_urgent_first_and_empties_every_lane() -> None:
    a, b, c = record("a", 1), record("b", 7), record("c", 1)
    queue = filled(a, b, c)
    queue.discard(c)
    assert [each.task_id for each in queue.drain()] == ["b", "a"]
    assert len(queue) == 0
    assert queue.pop() is None
    # Nothing drained is left marked as queued: pushed again, each comes out exactly once.
    for each in (a, b, c):
        queue.push(each)
    assert popped(queue) == ["b", "a", "c"]


def test_a_released_queue_leaves_no_record_believing_it_is_still_queued() -> None:
    old = ReadyQueue("q")
    gone = record("gone")
    old.push(gone)
    old.discard(gone)  # a stale entry: depth 0, so the broker may drop this queue
    old.release()
    fresh = ReadyQueue("q")
    fresh.push(gone)
    assert popped(fresh) == ["gone"]
