"""Errors a user can cause. The CLI prints their message as one sentence and exits with status 2."""

from __future__ import annotations

from collections.abc import Mapping


class StfnError(Exception):
    """Base class for user-facing errors: bad path, corrupt video, wrong config key, ..."""


class ParameterError(StfnError, ValueError):
    """A bad value of a library function's parameter(s): the message names the Python parameters
    (``workers must be 0 ... or more, got -1``). A command that passed a flag's value re-raises it
    naming the flag the user typed instead (:meth:`for_options`, :func:`stfn.commands.flag_names`)."""

    def __init__(self, parameters: str | tuple[str, ...], problem: str) -> None:
        self.parameters = (parameters,) if isinstance(parameters, str) else tuple(parameters)
        self.problem = problem
        super().__init__(f"{' and '.join(self.parameters)} {problem}")

    def for_options(self, options: Mapping[str, str]) -> StfnError:
        """The same error naming each parameter's option in ``options`` (``{"workers": "--workers"}``)."""
        return StfnError(f"{' and '.join(options.get(p, p) for p in self.parameters)} {self.problem}")
