"""The current decision follows the work: nested blocks, copied contexts, asyncio tasks."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from coalmine.core.model import Channel, Decision, Reason
from coalmine.sdk import current_decision, current_scope, current_token, use

A = Decision("shop", "shop-1", Channel.CANARY, {"api": "v2"}, Reason.COHORT)
B = Decision("shop", "shop-1", Channel.STABLE, {"api": "v1"}, Reason.COHORT)


def test_use_nests_and_restores() -> None:
    assert (current_decision(), current_token(), current_scope()) == (None, None, None)
    with use(A, "token-a") as d:
        assert d is A
        assert (current_decision(), current_token()) == (A, "token-a")
        with use(B, None):
            assert (current_decision(), current_token()) == (B, None)
        assert current_token() == "token-a"
    assert current_decision() is None


def test_threads_started_with_a_copied_context_see_it() -> None:
    seen: dict[str, object] = {}

    def work(name: str) -> None:
        seen[name] = current_token()

    with use(A, "token-a"):
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(work, "copied"))
        plain = threading.Thread(target=work, args=("plain",))
        copied.start()
        plain.start()
        copied.join()
        plain.join()
    assert seen == {"copied": "token-a", "plain": None}


async def test_asyncio_tasks_inherit_and_do_not_leak() -> None:
    async def inner() -> str | None:
        await asyncio.sleep(0)
        return current_token()

    async def sets_its_own() -> str | None:
        with use(B, "token-b"):
            await asyncio.sleep(0)
            return current_token()

    with use(A, "token-a"):
        task = asyncio.create_task(inner())
        assert list(await asyncio.gather(task, sets_its_own())) == ["token-a", "token-b"]
        assert current_token() == "token-a"
    assert await asyncio.create_task(inner()) is None
