"""The leak checker: a pytest plugin that fails a test which leaves anything behind.

A test fails if, once its fixtures are torn down:

- a Trio task it started is still alive (only a task outside every nursery
  the test owns can be: a system task), also in any example of an async
  Hypothesis test;
- a file descriptor (socket, pipe, file) is open that was not open before
  the test, or is open on something else (what a module- or session-scoped
  fixture opens counts as open before: it is the fixture's, not the test's,
  and isn't checked);
- a thread it started is still running, after a grace of up to
  ``THREAD_GRACE`` seconds for it to end: one left blocked in a sync tool
  after a timeout abandoned it (``abandon_on_cancel=True``), or a plain
  ``threading.Thread`` never joined. An idle worker of trio's thread cache
  (kept for the next ``trio.to_thread`` call) isn't the test's; one still
  running a job is, named by the job. As with descriptors, what a module- or
  session-scoped fixture starts is the fixture's;
- a ``ResourceWarning`` (an unclosed socket or file, an abandoned async
  generator) or a "coroutine ... was never awaited" warning fired, also one
  that fires when the garbage collector frees what the test dropped in a
  reference cycle (the checker collects after each test).

Turn it on in your own suite with pytest-trio installed, in ``conftest.py``::

    pytest_plugins = ["runtime.testing"]

or on the command line with ``pytest -p runtime.testing``. Mark a test
``@pytest.mark.allow_leaks`` to skip it there (say why in a comment). Mark it
``@pytest.mark.allow_threads("name", ...)`` to let threads of those names
(``fnmatch`` patterns, such as a library's long-lived ``"OtelBatchSpanProcessor"``)
outlive it and check the rest; ``pytestmark`` applies it to a whole module.

Once the tests are collected it freezes the heap (``gc.freeze()``), so the
collect it runs after each test only scans objects made since: a reference
cycle made at import or collection is never freed.
"""

from __future__ import annotations

import fnmatch
import gc
import os
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import FrameType

_RUN_SYNC_SOON_TASK: Final = "<TrioToken.run_sync_soon task>"
_FD_DIR: Final = "/proc/self/fd" if sys.platform.startswith("linux") else "/dev/fd"

THREAD_GRACE: Final = 1.0
"""Seconds, at most, the checker waits after a test for the threads it started to end."""

_leaks_key = pytest.StashKey[list[str]]()
_fds_key = pytest.StashKey[dict[int, str]]()
_threads_key = pytest.StashKey[set[threading.Thread]]()
_item_key = pytest.StashKey[pytest.Item]()


class TaskLeakInstrument(trio.abc.Instrument):
    """Records the tasks still alive when a ``trio.run``'s main task exits.

    Every task the main task started in a nursery has finished by then, so
    what is left was started outside any nursery the test owns.
    """

    def __init__(self) -> None:
        self._root: trio.lowlevel.Task | None = None
        self._main: trio.lowlevel.Task | None = None
        self._alive: dict[trio.lowlevel.Task, None] = {}
        self.leaked: list[str] = []
        """Descriptions of the tasks alive when the main task exited."""

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if self._root is None:
            self._root = task
        elif self._main is None:
            self._main = task
        elif task.name != _RUN_SYNC_SOON_TASK:
            self._alive[task] = None

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task is self._main:
            self.leaked = [_describe_task(t) for t in self._alive]
        self._alive.pop(task, None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: the leak checker skips this test")
    config.addinivalue_line(
        "markers", "allow_threads(*names): threads of these names (fnmatch patterns) may outlive this test"
    )
    config.addinivalue_line("filterwarnings", "error::ResourceWarning")
    config.addinivalue_line("filterwarnings", "error:coroutine .* was never awaited:RuntimeWarning")
    # Both usually fire in a finalizer (``__del__``), where the error the two
    # lines above make of them can't propagate: pytest re-issues it as a
    # PytestUnraisableExceptionWarning, which must be an error too, or the test
    # passes in a suite that doesn't set ``filterwarnings = error`` itself.
    config.addinivalue_line(
        "filterwarnings",
        "error:(?s).*(ResourceWarning|coroutine .* was never awaited):pytest.PytestUnraisableExceptionWarning",
    )


def pytest_collection_finish() -> None:
    # The checker collects after every test; freezing what collection and
    # imports made (most of the heap) means each collect scans only what was
    # made since. A cycle frozen here is never freed: a test's garbage is not.
    gc.collect()
    gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-trio calls the `run` of a test's closest `trio` marker; put ours
    # first so every trio.run of the test carries an instrument.
    for item in items:
        marker = item.get_closest_marker("trio")
        if marker is None or item.get_closest_marker("allow_leaks"):
            continue
        item.add_marker(pytest.mark.trio(run=_instrumented(item, marker.kwargs.get("run", trio.run))), append=False)


def _instrumented(item: pytest.Item, run: Callable[..., Any]) -> Callable[..., Any]:
    def run_with_leak_check(fn: Callable[[], Any], *, clock: Any = None, instruments: Any = ()) -> Any:
        instrument = TaskLeakInstrument()
        try:
            return run(fn, clock=clock, instruments=[*instruments, instrument])
        finally:
            item.stash.setdefault(_leaks_key, []).extend(instrument.leaked)

    return run_with_leak_check


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    if not item.get_closest_marker("allow_leaks"):
        # No gc.collect() here: the previous test's teardown already ran one.
        item.stash[_fds_key] = _open_fds()
        item.stash[_threads_key] = _busy_threads()
    item.config.stash[_item_key] = item
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    if fixturedef.scope == "function":
        return (yield)
    opening = _open_fds()
    opening_threads = _busy_threads()
    try:
        return (yield)
    finally:
        # A module- or session-scoped fixture outlives the test that first
        # uses it: what it opens or starts is its own, as if there before that test.
        item = request.config.stash.get(_item_key, None)
        before = item.stash.get(_fds_key, None) if item is not None else None
        if before is not None:
            before.update((fd, target) for fd, target in _open_fds().items() if opening.get(fd) != target)
        threads = item.stash.get(_threads_key, None) if item is not None else None
        if threads is not None:
            threads.update(_busy_threads() - opening_threads)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # trylast: inside pytest-trio's wrapper, which has wrapped the test by now.
    hypothesis = getattr(getattr(item, "obj", None), "hypothesis", None) if _checked(item) else None
    runner = hypothesis.inner_test if hypothesis is not None else None
    if hypothesis is not None:
        hypothesis.inner_test = _instrumented_hypothesis(item, runner)
    try:
        result = yield
    finally:
        if hypothesis is not None:
            hypothesis.inner_test = runner  # shared by the items of a parametrized test
    leaked = item.stash.get(_leaks_key, [])
    if leaked:
        pytest.fail(
            "leak checker: Trio tasks were still alive after the test and its fixtures ended "
            "(start them in a nursery the test owns):\n  " + "\n  ".join(dict.fromkeys(leaked)),
            pytrace=False,
        )
    return result


def _checked(item: pytest.Item) -> bool:
    return item.get_closest_marker("trio") is not None and item.get_closest_marker("allow_leaks") is None


def _instrumented_hypothesis(item: pytest.Item, runner: Any) -> Callable[..., Any]:
    # pytest-trio runs each example of an async Hypothesis test with trio.run
    # itself, not with the marker's run: rebuild its runner around ours.
    try:
        from pytest_trio.plugin import _trio_test  # type: ignore[import-untyped]

        test = runner.__wrapped__ if runner._trio_test_runner_wrapped else None
    except (ImportError, AttributeError):
        test = None
    if test is None:
        pytest.fail(
            "leak checker: can't check this async Hypothesis test for leaked Trio tasks "
            "(pytest-trio wraps it in a way the checker doesn't know)",
            pytrace=False,
        )
    checked: Callable[..., Any] = _trio_test(run=_instrumented(item, trio.run))(test)
    checked._trio_test_runner_wrapped = True  # type: ignore[attr-defined]
    return checked


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    result = yield
    before = item.stash.get(_fds_key, None)
    if before is None:
        return result
    # Threads first: one that is still running may hold descriptors, and its
    # name says more than they do.
    running = _threads_left_running(item, item.stash[_threads_key])
    del item.stash[_threads_key]  # the Thread objects: items live as long as the session
    if running:
        frames = sys._current_frames()
        listing = "\n  ".join(_describe_thread(thread, frames.get(thread.ident or -1)) for thread in running)
        pytest.fail(
            f"leak checker: the test left {len(running)} thread(s) running {THREAD_GRACE:g} s after it ended "
            f"(join them, or end what blocks them, before the test ends):\n  {listing}",
            pytrace=False,
        )
    # Collect first, so an unclosed socket is reported (as a ResourceWarning)
    # by the test that dropped it, and so it isn't counted twice.
    unclosed = _collect_garbage()
    if unclosed:
        pytest.fail(
            "leak checker: garbage collection after the test found what it dropped unclosed:\n  "
            + "\n  ".join(unclosed),
            pytrace=False,
        )
    # Any descriptor that is new, or open on something else than before: one
    # the test closed doesn't make up for one it leaked.
    new = sorted((fd, target) for fd, target in _open_fds().items() if before.get(fd) != target)
    if new:
        listing = "\n  ".join(f"fd {fd}: {target}" for fd, target in new)
        pytest.fail(f"leak checker: the test left {len(new)} new file descriptor(s) open:\n  {listing}", pytrace=False)
    return result


def _collect_garbage() -> list[str]:
    """Run the garbage collector and return the warnings its finalizers raised.

    Those fire in ``__del__``, where Python hands them to ``sys.unraisablehook``.
    pytest's own hook reports them only at its next check, which for this
    collect (after the test's teardown) is the next test's setup: so catch
    them here. Other errors in finalizers are re-issued as pytest would.
    """
    caught: list[BaseException] = []

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_value is not None:
            caught.append(unraisable.exc_value)

    previous, sys.unraisablehook = sys.unraisablehook, hook
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous
    unclosed = []
    for exc in caught:
        if isinstance(exc, ResourceWarning) or (isinstance(exc, RuntimeWarning) and "never awaited" in str(exc)):
            unclosed.append(f"{type(exc).__name__}: {exc}")
        else:
            warnings.warn(
                pytest.PytestUnraisableExceptionWarning(f"Exception ignored in a finalizer: {exc!r}"), stacklevel=1
            )
    return unclosed


def _idle_trio_threads() -> set[threading.Thread]:
    """The threads of trio's thread cache that wait, idle, for the next ``trio.to_thread`` call.

    The cache keeps a worker for 10 s after its job: it is no test's. Its set of
    idle workers is private, but says exactly that, where the thread's name
    (``"Trio thread N"`` when idle, the job's while busy) is as private and only
    implies it. If trio changes it, the checker fails every test, saying so.
    """
    try:
        from trio._core._thread_cache import THREAD_CACHE

        return {worker._thread for worker in THREAD_CACHE._idle_workers.copy()}
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            f"leak checker: can't tell the idle threads of trio's thread cache ({exc!r}): "
            "this trio is newer than runtime.testing knows",
            pytrace=False,
        )


def _busy_threads() -> set[threading.Thread]:
    """The live threads, but the idle ones of trio's thread cache."""
    return set(threading.enumerate()) - _idle_trio_threads()


def _threads_left_running(item: pytest.Item, before: set[threading.Thread]) -> list[threading.Thread]:
    """The threads started since ``before`` still running after a grace of up to ``THREAD_GRACE`` seconds.

    A trio cache worker counts as ended when it is idle again, a thread the
    test's ``allow_threads`` markers name is left out.
    """
    markers = list(item.iter_markers("allow_threads"))
    if any(not marker.args for marker in markers):
        pytest.fail('leak checker: allow_threads takes the names of the threads it allows ("*" for any)', pytrace=False)
    allowed = [name for marker in markers for name in marker.args]

    def running() -> list[threading.Thread]:
        return [
            thread
            for thread in _busy_threads() - before
            if not any(fnmatch.fnmatchcase(thread.name, name) for name in allowed)
        ]

    deadline = time.monotonic() + THREAD_GRACE
    left = running()
    while left and (remaining := deadline - time.monotonic()) > 0:
        # Short joins: a trio cache worker never ends, it goes idle.
        left[0].join(min(remaining, 0.01))
        left = running()
    return sorted(left, key=lambda thread: thread.name)


def _describe_thread(thread: threading.Thread, frame: FrameType | None) -> str:
    from trio._core._thread_cache import WorkerThread

    target = getattr(thread, "_target", None)  # what threading.Thread(target=...) got
    if isinstance(getattr(target, "__self__", None), WorkerThread):
        what = f"{thread.name!r} (a worker of trio's thread cache, named after its job)"
    elif target is not None:
        what = f"{thread.name!r} running {getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
    else:
        what = f"{thread.name!r} ({type(thread).__module__}.{type(thread).__qualname__})"
    # Where it is: its innermost frame outside threading.py (an Event.wait says little).
    while frame is not None and frame.f_code.co_filename == threading.__file__ and frame.f_back is not None:
        frame = frame.f_back
    where = f" at {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}" if frame is not None else ""
    return what + where


def _open_fds() -> dict[int, str]:
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return {}
    fds: dict[int, str] = {}
    for name in names:
        try:
            fds[int(name)] = os.readlink(f"{_FD_DIR}/{name}")
        except OSError:
            continue  # the descriptor listdir itself used, already closed
    return fds


def _describe_task(task: trio.lowlevel.Task) -> str:
    frame = next((frame for frame, _ in task.iter_await_frames()), None)
    where = f" at {frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else ""
    return f"{task.name}{where}"
