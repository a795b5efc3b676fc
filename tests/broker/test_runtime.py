"""The runtime's flush: outboxes go to their streams once per loop turn, or at once when asked."""

from __future__ import annotations

import asyncio

from broker.service.runtime import Outgoing, Runtime, StreamEnd
from tests.broker.core_support import connect, make_broker, spec


def test_flush_now_queues_a_new_assignment_in_this_turn() -> None:
    async def scenario() -> None:
        core, _ = make_broker()
        runtime = Runtime(core, asyncio.get_running_loop())
        session = connect(core, credit=1)
        outgoing: Outgoing = asyncio.Queue()
        runtime.attach(session.session_id, outgoing)
        assert runtime.flush_now() is False  # nothing has changed

        core.submit(spec(task_id="t1"))
        runtime.changed()
        assert runtime.flush_now() is True
        message = outgoing.get_nowait()
        assert not isinstance(message, StreamEnd)
        assert [a.task_id for a in message.assignments.tasks] == ["t1"]

        # The flush the change scheduled for the end of the turn finds nothing left to send.
        await asyncio.sleep(0)
        assert outgoing.empty()

        core.submit(spec(task_id="t2"))  # no credit left: queued, nothing to flush
        runtime.changed()
        assert runtime.flush_now() is False
        assert outgoing.empty()

    asyncio.run(scenario())
