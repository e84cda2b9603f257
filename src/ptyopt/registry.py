"""Name -> implementation registries with helpful errors (losses, constraints, solvers, propagators, readers,
preprocessing steps). Every registry uses the one decorator ``@REGISTRY.register``, which reads ``item.name``."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ptyopt.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' did you mean 'x'?' for the closest choice, or a list of valid choices."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; valid choices: {', '.join(sorted(choices))}"


class Registry(Generic[T]):
    """Registry of named implementations. Registering a name twice fails at import time; ``check`` (optional)
    is called on every item before it is registered (e.g. a constraint must have a place in the execution
    order)."""

    def __init__(self, kind: str, check: Callable[[T], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, tuple[str, str]] = {}
        self._check = check

    def register(self, item: T) -> T:
        """Class decorator: register ``item`` under ``item.name``."""
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise RuntimeError(f"a {self.kind} needs a class attribute 'name' to be registered: {item!r}")
        if name in self._items or name in self._aliases:
            raise RuntimeError(f"{self.kind} '{name}' is registered twice")
        if self._check is not None:
            self._check(item)
        self._items[name] = item
        return item

    def alias(self, old: str, new: str, note: str) -> None:
        """Accept the former name ``old`` for ``new``; ``note`` says why it changed (shown by ``deprecation``)."""
        if new not in self._items or old in self._items or old in self._aliases:
            raise RuntimeError(f"{self.kind} alias '{old}' -> '{new}' needs a registered '{new}' and a free '{old}'")
        self._aliases[old] = (new, note)

    def canonical(self, name: str) -> str:
        """The registered name that ``name`` stands for (itself, or the target of an alias)."""
        return self._aliases[name][0] if name in self._aliases else name

    def deprecation(self, name: str) -> str | None:
        """The deprecation message of an alias, None for a registered name."""
        if name not in self._aliases:
            return None
        new, note = self._aliases[name]
        return f"{self.kind} '{name}' is now called '{new}' ({note}); '{name}' still works but will be removed"

    def get(self, name: str) -> T:
        try:
            return self._items[self.canonical(name)]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
