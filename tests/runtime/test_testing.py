"""Tests for runtime.testing, the leak checker, each run in a pytest subprocess of its own."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

_INI = "[pytest]\ntrio_mode = true\n"


def _run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    """Run ``source`` as a test module in a fresh pytest process with the leak checker on."""
    pytester.makeini(_INI)
    pytester.makepyfile(textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "runtime.testing", "-p", "no:cacheprovider")


def test_leak_checker_passes_clean_trio_test(pytester: pytest.Pytester) -> None:
    """A Trio test that starts and joins its tasks in its own nursery passes."""
    result = _run(
        pytester,
        """
        import trio

        async def test_clean() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0)
                nursery.start_soon(trio.sleep, 0)
        """,
    )
    result.assert_outcomes(passed=1)


def test_leak_checker_fails_leaked_task(pytester: pytest.Pytester) -> None:
    """A Trio task started outside every nursery the test owns fails the test, named in the message."""
    result = _run(
        pytester,
        """
        import trio

        async def forever_leaked() -> None:
            await trio.sleep_forever()

        async def test_leaks_task() -> None:
            trio.lowlevel.spawn_system_task(forever_leaked)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*leak checker: Trio tasks were still alive after the test and its fixtures ended*",
            "*forever_leaked*",
        ]
    )


def test_leak_checker_fails_leaked_socket(pytester: pytest.Pytester) -> None:
    """A socket the test opens and keeps open past its end fails it with the file descriptor message."""
    result = _run(
        pytester,
        """
        import socket

        KEPT: list[socket.socket] = []

        def test_leaks_socket() -> None:
            KEPT.append(socket.socket())
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*leak checker: the test left 1 new file descriptor(s) open:*",
            "*fd *: socket:*",
        ]
    )


def test_leak_checker_fails_dropped_unclosed_socket(pytester: pytest.Pytester) -> None:
    """A socket dropped without being closed raises a ResourceWarning that fails the test."""
    result = _run(
        pytester,
        """
        import socket

        def test_drops_socket() -> None:
            socket.socket()
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ResourceWarning: unclosed <socket.socket*"])


def test_leak_checker_fails_coroutine_never_awaited(pytester: pytest.Pytester) -> None:
    """A coroutine created and never awaited fails the test."""
    result = _run(
        pytester,
        """
        import trio

        async def test_forgets_await() -> None:
            trio.sleep(0)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeWarning: coroutine 'sleep' was never awaited*"])


def test_leak_checker_passes_server_in_nursery_fixture(pytester: pytest.Pytester) -> None:
    """A server started in pytest-trio's nursery fixture, cancelled with it, leaves nothing behind."""
    result = _run(
        pytester,
        """
        import functools

        import trio

        async def echo(stream: trio.SocketStream) -> None:
            async with stream:
                async for data in stream:
                    await stream.send_all(data)

        async def test_echo_server(nursery: trio.Nursery) -> None:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            with trio.fail_after(10):
                async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                    await client.send_all(b"ping")
                    assert await client.receive_some(4) == b"ping"
        """,
    )
    result.assert_outcomes(passed=1)


def test_leak_checker_skips_test_marked_allow_leaks(pytester: pytest.Pytester) -> None:
    """A test marked allow_leaks that leaks a Trio task passes."""
    result = _run(
        pytester,
        """
        import pytest
        import trio

        # The leak is the point: this test proves the opt-out works.
        @pytest.mark.allow_leaks
        async def test_leaks_task() -> None:
            trio.lowlevel.spawn_system_task(trio.sleep_forever)
        """,
    )
    result.assert_outcomes(passed=1)


def test_leak_checker_passes_clean_sync_test(pytester: pytest.Pytester) -> None:
    """A synchronous test that opens and closes its resources passes."""
    result = _run(
        pytester,
        """
        import socket

        def test_sync() -> None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
            assert sum(range(4)) == 6
        """,
    )
    result.assert_outcomes(passed=1)


def test_leak_checker_blames_socket_freed_by_garbage_collection_on_its_test(pytester: pytest.Pytester) -> None:
    """A socket dropped unclosed in a reference cycle (freed only by the checker's collect) fails the test that
    dropped it, naming the ResourceWarning, and not the next test."""
    result = _run(
        pytester,
        """
        import gc
        import socket

        gc.disable()  # only the checker's collect frees the cycle, so the test is deterministic


        def test_drops_socket_in_cycle() -> None:
            sock = socket.socket()
            try:
                raise ValueError("kept")
            except ValueError as exc:
                error = exc  # error -> traceback -> this frame -> error: freed only by the collector


        def test_innocent() -> None:
            assert True
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_drops_socket_in_cycle*",
            "*leak checker: garbage collection after the test found what it dropped unclosed:*",
            "*ResourceWarning: unclosed <socket.socket*",
        ]
    )


def test_leak_checker_blames_socket_freed_by_garbage_collection_in_last_test(pytester: pytest.Pytester) -> None:
    """A socket dropped unclosed in a reference cycle by the session's last test fails that test."""
    result = _run(
        pytester,
        """
        import gc
        import socket

        gc.disable()  # only the checker's collect frees the cycle, so the test is deterministic


        class Holder:
            def __init__(self) -> None:
                self.me = self
                self.sock = socket.socket()


        def test_drops_socket_in_cycle() -> None:
            Holder()
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_drops_socket_in_cycle*", "*ResourceWarning: unclosed*"])


def test_leak_checker_fails_leaked_socket_when_test_also_closes_an_older_fd(pytester: pytest.Pytester) -> None:
    """A socket the test keeps open fails it even when the test also closes a file opened before it (the count
    of open descriptors doesn't grow)."""
    result = _run(
        pytester,
        """
        import os
        import socket

        OLD = open(os.devnull)  # opened at import, before the test
        KEPT: list[socket.socket] = []


        def test_closes_old_file_and_leaks_socket() -> None:
            OLD.close()
            KEPT.append(socket.socket())
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*leak checker: the test left 1 new file descriptor(s) open:*", "*fd *: socket:*"])


def test_leak_checker_passes_file_held_by_module_scoped_fixture(pytester: pytest.Pytester) -> None:
    """A file a module-scoped fixture opens and keeps open for the module's tests fails none of them (not the
    first test that uses it)."""
    result = _run(
        pytester,
        """
        import os
        from collections.abc import Iterator
        from typing import TextIO

        import pytest


        @pytest.fixture(scope="module")
        def shared_log() -> Iterator[TextIO]:
            with open(os.devnull, "w") as log:
                yield log


        def test_one(shared_log: TextIO) -> None:
            shared_log.write("one")


        def test_two(shared_log: TextIO) -> None:
            shared_log.write("two")
        """,
    )
    result.assert_outcomes(passed=2)


def test_leak_checker_still_fails_leak_of_test_using_module_scoped_fixture(pytester: pytest.Pytester) -> None:
    """A socket leaked by the test that first sets up a module-scoped fixture still fails it."""
    result = _run(
        pytester,
        """
        import os
        import socket
        from collections.abc import Iterator
        from typing import TextIO

        import pytest

        KEPT: list[socket.socket] = []


        @pytest.fixture(scope="module")
        def shared_log() -> Iterator[TextIO]:
            with open(os.devnull, "w") as log:
                yield log


        def test_leaks_socket(shared_log: TextIO) -> None:
            KEPT.append(socket.socket())
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*leak checker: the test left 1 new file descriptor(s) open:*", "*fd *: socket:*"])


def test_leak_checker_fails_task_leaked_by_async_hypothesis_test(pytester: pytest.Pytester) -> None:
    """A Trio task leaked by an example of an async Hypothesis test fails it, named in the message."""
    result = _run(
        pytester,
        """
        import trio
        from hypothesis import given, settings, strategies as st

        async def forever_leaked() -> None:
            await trio.sleep_forever()

        @settings(max_examples=3, deadline=None, database=None)
        @given(st.integers())
        async def test_leaks_task(n: int) -> None:
            trio.lowlevel.spawn_system_task(forever_leaked)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*leak checker: Trio tasks were still alive after the test and its fixtures ended*",
            "*forever_leaked*",
        ]
    )


def test_leak_checker_checks_each_item_of_parametrized_async_hypothesis_test(pytester: pytest.Pytester) -> None:
    """The items of a parametrized async Hypothesis test share one Hypothesis runner: each is checked on its
    own, so the clean one passes and the leaking one fails."""
    result = _run(
        pytester,
        """
        import pytest
        import trio
        from hypothesis import given, settings, strategies as st

        @pytest.mark.parametrize("leak", [False, True, False])
        @settings(max_examples=3, deadline=None, database=None)
        @given(st.integers())
        async def test_maybe_leaks_task(leak: bool, n: int) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0)
            if leak:
                trio.lowlevel.spawn_system_task(trio.sleep_forever)
        """,
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*FAILED*test_maybe_leaks_task?True*"])


def test_leak_checker_freezes_heap_made_before_the_tests(pytester: pytest.Pytester) -> None:
    """The checker freezes the objects that collection and imports made, so its collect after each test scans
    only the objects made since (and still frees what a test dropped: see the garbage collection tests)."""
    result = _run(
        pytester,
        """
        import gc

        IMPORTED: list[int] = []


        def test_heap_is_frozen() -> None:
            assert gc.get_freeze_count() > 0
            assert not any(obj is IMPORTED for obj in gc.get_objects())  # frozen: no collection looks at it
        """,
    )
    result.assert_outcomes(passed=1)


def test_leak_checker_fails_thread_left_running(pytester: pytest.Pytester) -> None:
    """A thread the test starts and leaves running fails that test, named with its target and where it waits,
    and not the next test."""
    result = _run(
        pytester,
        """
        import threading

        NEVER = threading.Event()


        def wait_forever() -> None:
            NEVER.wait()


        def test_leaks_thread() -> None:
            threading.Thread(target=wait_forever, name="leaky", daemon=True).start()


        def test_innocent() -> None:
            assert True
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_thread*",
            "*leak checker: the test left 1 thread(s) running 1 s after it ended*",
            "*'leaky' running test_leak_checker_fails_thread_left_running.wait_forever at *.py:7 in wait_forever",
        ]
    )


def test_leak_checker_fails_abandoned_trio_thread_job(pytester: pytest.Pytester) -> None:
    """A ``trio.to_thread`` job the test abandons on cancel and leaves running fails it, named by the job."""
    result = _run(
        pytester,
        """
        import threading

        import trio

        STARTED, NEVER = threading.Event(), threading.Event()


        def block() -> None:
            STARTED.set()
            NEVER.wait()


        async def test_abandons_thread() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: trio.to_thread.run_sync(block, abandon_on_cancel=True))
                await trio.to_thread.run_sync(STARTED.wait)
                nursery.cancel_scope.cancel()
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*leak checker: the test left 1 thread(s) running*",
            "*'block from *' (a worker of trio's thread cache, named after its job) at *.py:* in block",
        ]
    )


def test_leak_checker_passes_idle_trio_cache_thread(pytester: pytest.Pytester) -> None:
    """A ``trio.to_thread`` call that finished leaves an idle worker in trio's thread cache, which passes; this
    fails loudly if trio changes how the checker tells its idle workers."""
    result = _run(
        pytester,
        """
        import threading

        import trio


        async def test_uses_thread() -> None:
            before = set(threading.enumerate())
            assert await trio.to_thread.run_sync(sum, [1, 2]) == 3
            assert set(threading.enumerate()) - before  # a new worker, idle in the cache
        """,
    )
    result.assert_outcomes(passed=1)


def test_leak_checker_passes_thread_ending_within_the_grace(pytester: pytest.Pytester) -> None:
    """A thread still running when the test ends, but ending soon after (well within the grace), passes."""
    result = _run(
        pytester,
        """
        import threading

        NEVER = threading.Event()


        def test_thread_ends_soon() -> None:
            thread = threading.Thread(target=NEVER.wait, args=(0.3,), name="ends soon")
            thread.start()
            assert thread.is_alive()
        """,
    )
    result.assert_outcomes(passed=1)


def test_leak_checker_passes_thread_of_module_scoped_fixture(pytester: pytest.Pytester) -> None:
    """A thread a module-scoped fixture starts and joins at its teardown fails none of the tests that use it
    (not the first one)."""
    result = _run(
        pytester,
        """
        import threading
        from collections.abc import Iterator

        import pytest


        @pytest.fixture(scope="module")
        def background() -> Iterator[threading.Thread]:
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait, name="module worker")
            thread.start()
            yield thread
            stop.set()
            thread.join()


        def test_one(background: threading.Thread) -> None:
            assert background.is_alive()


        def test_two(background: threading.Thread) -> None:
            assert background.is_alive()
        """,
    )
    result.assert_outcomes(passed=2)


def test_leak_checker_lets_threads_marked_allow_threads_outlive_the_test(pytester: pytest.Pytester) -> None:
    """A thread whose name an ``allow_threads`` marker matches passes; one it doesn't match still fails, and so does
    the marker without names."""
    result = _run(
        pytester,
        """
        import threading

        import pytest

        NEVER = threading.Event()


        # The threads outlive the tests on purpose: this module proves the opt-out works.
        @pytest.mark.allow_threads("keeper-*")
        def test_allowed() -> None:
            threading.Thread(target=NEVER.wait, name="keeper-1", daemon=True).start()


        @pytest.mark.allow_threads("keeper-*")
        def test_not_allowed() -> None:
            threading.Thread(target=NEVER.wait, name="stray", daemon=True).start()


        @pytest.mark.allow_threads
        def test_no_names() -> None:
            assert True
        """,
    )
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_not_allowed*",
            "*'stray' running *",
            "*ERROR at teardown of test_no_names*",
            "*allow_threads takes the names of the threads it allows*",
        ]
    )
    result.stdout.no_fnmatch_line("*'keeper-1'*")
