"""Calling a model under a time limit, in a thread or in a worker process, so that whatever the
model does (raise, hang, call `sys.exit`, call `os._exit`, modify its input) becomes a recorded
failure of one case and never stops, slows or corrupts the run.

- ``isolation="thread"`` (the default): the model runs in a thread of this process, on read-only
  arrays. A call past its deadline is recorded as timed out, but Python cannot stop a thread:
  it goes on computing in the background (a `CommandModel` kills its own process group).
- ``isolation="process"``: the model runs in a spawned worker process that gets a copy of each
  case; a call past its deadline kills the worker, and the next call starts a fresh one. The
  model must be picklable (a module-level function or class instance).
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from dataclasses import replace
from typing import Literal

from umd_dataset.errors import InvalidOptionError, ModelError, check_choice
from umd_dataset.evaluation.case import Case

__all__ = ["ISOLATIONS", "ModelTimeout", "ModelCaller", "format_failure"]

ISOLATIONS = ("thread", "process")
#: Seconds a call may run past its limit before it is stopped from outside, so that an adapter that
#: honours `Case.timeout_s` itself (a command model kills its process group) stops first.
GRACE_S = 1.0


class ModelTimeout(ModelError):
    """A model call that ran past its time limit."""


def _describe(error: BaseException) -> ModelError | BaseException:
    """What the model did, as the failure to record: `sys.exit` and in-place writes into read-only
    inputs get their own clear message; other exceptions are kept as they are."""
    if isinstance(error, SystemExit):
        return ModelError(f"the model called sys.exit({error.code!r}); a model must return a prediction")
    if isinstance(error, ValueError) and "read-only" in str(error):
        return ModelError(
            f"the model tried to modify its input in place ({error}); inputs are read-only: copy them first (np.array(case.image))"
        )
    return error


def _serve(model, connection) -> None:
    """The worker process: holds one case at a time and answers calls on it."""
    case = None
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message[0] == "case":
            case = message[1]
            continue
        prompt = message[1]
        try:
            value = model(case) if prompt is None else model(case, prompt)
            connection.send(("ok", value))
        except BaseException as error:  # noqa: BLE001 - everything the model does is reported back
            failure = _describe(error)
            try:
                connection.send(("error", failure))
            except Exception:  # noqa: BLE001 - an exception that does not pickle is sent as text
                connection.send(("error", ModelError(f"{type(failure).__name__}: {failure}")))


class ModelCaller:
    """Calls one model on one case at a time, under `timeout_s` per call, in a thread or a worker process.

    Args:
        model: the model (see `umd_dataset.evaluation.case`).
        isolation: ``thread`` or ``process`` (see the module).
        timeout_s: seconds a call may take.

    Raises:
        UnknownNameError: an unknown isolation.
        InvalidOptionError: ``process`` isolation with a model that cannot be pickled.
    """

    def __init__(self, model, *, isolation: Literal["thread", "process"] = "thread", timeout_s: float = 600.0) -> None:
        self.model, self.isolation, self.timeout_s = model, check_choice(isolation, ISOLATIONS, "isolation"), timeout_s
        self._case: Case | None = None
        self._worker = None
        self._connection = None
        self._sent = False
        if isolation == "process":
            import pickle

            try:
                pickle.dumps(model)
            except Exception as error:  # noqa: BLE001 - any pickling failure means the same thing
                raise InvalidOptionError(
                    f"isolation='process' runs the model in a worker process, so the model must be picklable (a "
                    f"module-level function or class instance); {type(model).__name__} is not ({error})."
                ) from error

    def set_case(self, case: Case) -> None:
        """The case of the next calls (sent to the worker once, with its first call)."""
        self._case = replace(case, timeout_s=self.timeout_s)
        self._sent = False

    def __call__(self, prompt=None):
        """The model's output on the current case (with `prompt` for a promptable model).

        Raises:
            ModelTimeout: the call ran past the time limit.
            ModelError: the model exited, called `sys.exit`, or wrote into its read-only input.
            Exception: whatever else the model raised.
        """
        if self.isolation == "thread":
            return self._in_thread(prompt)
        return self._in_process(prompt)

    def _in_thread(self, prompt):
        box: dict = {}
        args = (self._case,) if prompt is None else (self._case, prompt)

        def target() -> None:
            try:
                box["value"] = self.model(*args)
            except BaseException as error:  # noqa: BLE001 - any failure of user code is recorded, not raised
                box["error"] = _describe(error)

        thread = threading.Thread(target=target, daemon=True, name="umd-model")
        thread.start()
        thread.join(self.timeout_s + GRACE_S)
        if thread.is_alive():
            raise ModelTimeout(
                f"timed out after {self.timeout_s:g} s (the call goes on in the background: use isolation='process' to stop it)"
            )
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._worker = context.Process(target=_serve, args=(self.model, child), daemon=True, name="umd-model")
        self._worker.start()
        child.close()
        self._sent = False

    def _stop(self) -> None:
        if self._worker is not None:
            if self._worker.is_alive():
                self._worker.kill()
            self._worker.join(10)
            self._connection.close()
        self._worker = self._connection = None

    def _in_process(self, prompt):
        if self._worker is None or not self._worker.is_alive():
            self._stop()
            self._start()
        try:
            if not self._sent:
                self._connection.send(("case", self._case))
                self._sent = True
            self._connection.send(("call", prompt))
            if not self._connection.poll(self.timeout_s + GRACE_S):
                self._stop()
                raise ModelTimeout(f"timed out after {self.timeout_s:g} s (its worker process was killed)")
            status, value = self._connection.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            code = None
            if self._worker is not None:
                self._worker.join(5)  # the pipe closes a moment before the process has ended: wait for its exit code
                code = self._worker.exitcode
            self._stop()
            raise ModelError(f"the model's worker process ended (exit code {code}) without returning a prediction") from None
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop the worker process, if any."""
        self._stop()

    def __enter__(self) -> ModelCaller:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_failure(error: BaseException) -> str:
    """The one-line reason recorded for a failed case."""
    text = str(error).strip() or "".join(traceback.format_exception_only(type(error), error)).strip()
    return f"{type(error).__name__}: {text}"

