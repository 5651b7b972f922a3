"""Ctrl-C during a Lightning ``fit`` reaches the caller as ``KeyboardInterrupt``.

Lightning catches a ``KeyboardInterrupt`` inside ``Trainer.fit``, tears the run down and calls
``sys.exit(1)``. For a library call that is the wrong answer: Keras and a plain PyTorch loop let the
interrupt through, so ``try: model.fit(...) except KeyboardInterrupt: model.save(...)`` keeps what
was trained, and a notebook shows an interrupted cell rather than ``SystemExit: 1``. Lightning is
imported only by the callers (where training starts).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

#: The status of a fit ended by SIGTERM: ``SystemExit(143)`` (128 + SIGTERM, as a shell reports it).
SIGTERM_STATUS = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """SIGTERM outside a fit, raised by the handler :func:`exit_on_sigterm` installs: code 143."""


def ended_by_sigterm(err: BaseException) -> bool:
    """Whether ``err`` is how a SIGTERM ends the work: a fit (:func:`fit_passing_interrupts`) or, under
    :func:`exit_on_sigterm`, anything else (data loading, evaluation, prediction)."""
    return isinstance(err, SystemExit) and err.code == SIGTERM_STATUS


def _raise_terminated(signum: int, frame: Any) -> None:
    if signal.getsignal(signal.SIGTERM) is not _raise_terminated:  # called by Lightning's handler during a
        return  # fit: the fit ends at the next batch (fit_passing_interrupts gives it the code 143)
    raise Terminated(SIGTERM_STATUS)


def exit_on_sigterm() -> None:
    """Make SIGTERM end the process the way Ctrl-C does: as an exception (:class:`Terminated`, a
    ``SystemExit`` with code 143), so ``finally`` blocks and the command line's cleanup run, instead of
    Python's default of ending at once. The command line installs it; a script may too. During a
    Lightning fit, Lightning's own handler (which calls this one) stops the fit at the next batch.
    Main thread only (as every signal handler); elsewhere it does nothing."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def fit_passing_interrupts(trainer: Any, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit(*args, **kwargs)``, re-raising a Ctrl-C as the ``KeyboardInterrupt`` it was.

    Lightning reports the exception to its callbacks' ``on_exception`` before it exits; a
    ``SystemExit`` that follows a ``KeyboardInterrupt`` seen there is Lightning's, one raised by
    user code (a callback calling ``sys.exit``) is passed on unchanged.

    A SIGTERM (``timeout``, a cluster scheduler) ends the fit at the next batch with Lightning's
    ``SIGTERMException``, a ``SystemExit`` whose code is ``None``: a script it ends would exit with
    status 0, as if training had finished. It is re-raised with the code 143 (128 + SIGTERM), the
    status a shell reports for a process that SIGTERM ended. Lightning looks for a SIGTERM only between
    training batches: one that arrives during the last validation or the teardown would be swallowed
    (the script going on as if nothing had come), so a fit that returns having seen one raises the
    same ``SystemExit(143)``; the fit has finished and its weights are the finished ones.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class _SeeInterrupt(pl.Callback):
        interrupt: KeyboardInterrupt | None = None

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            if isinstance(exception, KeyboardInterrupt):
                self.interrupt = exception

    seen = _SeeInterrupt()
    trainer.callbacks.append(seen)
    try:
        trainer.fit(*args, **kwargs)
    except SIGTERMException as err:
        if err.code is None:
            err.code = SIGTERM_STATUS
        raise
    except SystemExit:
        if seen.interrupt is None:
            raise
        raise seen.interrupt from None
    finally:
        trainer.callbacks.remove(seen)
    if getattr(trainer, "received_sigterm", False):  # seen after the last check between training batches
        raise SystemExit(SIGTERM_STATUS)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """A block in which Ctrl-C and SIGTERM are ignored: the cleanup after a first one (a second one,
    arriving while a run folder or a report is written, would lose the line that says how to resume,
    or half the files). Main thread only (elsewhere it changes nothing); the handlers are restored on
    leaving it."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


class StopRequest:
    """Whether a first Ctrl-C asked the training loop to stop (see :func:`ctrl_c_requests_a_stop`)."""

    asked = False


@contextlib.contextmanager
def ctrl_c_requests_a_stop(message: str) -> Iterator[StopRequest]:
    """Inside this block a first Ctrl-C does not interrupt: it sets ``request.asked`` and prints
    ``message`` on stderr, so the loop can finish its batch, write a checkpoint and then stop (raising
    ``KeyboardInterrupt`` itself); a second Ctrl-C raises ``KeyboardInterrupt`` at once. Only in the
    main thread, and only where Python's own Ctrl-C handler is in place (a handler of the caller's is
    left alone: ``request.asked`` then stays false). The handler is restored on leaving."""
    import threading

    request = StopRequest()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield request
        return

    def first_ctrl_c(signum: int, frame: Any) -> None:
        if request.asked:
            raise KeyboardInterrupt
        request.asked = True
        sys.stderr.write(f"\n{message}\n")
        sys.stderr.flush()

    signal.signal(signal.SIGINT, first_ctrl_c)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
