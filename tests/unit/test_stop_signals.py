"""The stop signals' handlers: recorded without blocking, a second one ends the process through its cleanup."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tritonforge.stop_signals import STOP_SIGNALS, StopOnSignals, exit_code, not_ignored


@pytest.fixture(autouse=True)
def _handlers_restored() -> Iterator[None]:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def _wait_for(signals: StopOnSignals) -> None:
    assert signals.stop.wait(5), "the first signal did not set stop"


def test_the_first_signal_sets_stop_and_is_recorded() -> None:
    with StopOnSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(signals)
    assert signals.caught == [signal.SIGTERM]


def test_a_handler_does_not_wait_on_the_lock_the_interrupted_thread_holds() -> None:
    """The handler used to call Event.set(), which takes the Event's lock: a signal landing while the main thread
    held it (inside wait() or set()) deadlocked the process."""
    with StopOnSignals() as signals:
        with signals.stop._cond:  # what the main thread holds inside Event.wait()/set()
            began = time.monotonic()
            signals._handle(signal.SIGINT, None)
            assert time.monotonic() - began < 1
        _wait_for(signals)
    assert signals.caught == [signal.SIGINT]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_second_signal_with_no_handler_before_exits_with_its_code(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)  # the default action ended the process with no cleanup at all
    with pytest.raises(SystemExit) as ended, StopOnSignals() as signals:
        os.kill(os.getpid(), signum)
        _wait_for(signals)
        os.kill(os.getpid(), signum)
        time.sleep(1)
    assert ended.value.code == exit_code(signum) == 128 + signum


def test_a_second_ctrl_c_reaches_the_handler_that_was_there_before() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt), StopOnSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(signals)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_started_ignored_stays_ignored() -> None:
    """Under nohup SIGHUP is ignored: a handler of ours would stop what the user asked to outlive the terminal."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    assert signal.SIGHUP not in not_ignored()
    with StopOnSignals() as signals:
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.2)
    assert signals.caught == [] and not signals.stop.is_set()
