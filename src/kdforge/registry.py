"""One Registry class; one instance per kind of thing a recipe can name by key."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar

from kdforge.errors import KDForgeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps recipe keys ("mlp", "digits", "kd") to builders. Unknown keys list the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, key: str) -> T:
        if key not in self._items:
            close = difflib.get_close_matches(key, self._items, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise KDForgeError(f"unknown {self.kind} {key!r}{hint}; valid: {', '.join(sorted(self._items))}")
        return self._items[key]

    def build(self, key: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(key)(*args, **kwargs)  # type: ignore[operator]

    def keys(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
METHODS: Registry = Registry("method")
WORKFLOWS: Registry = Registry("workflow")  # recipe `method:` -> run(recipe, *, resume, force, quiet) (kdforge.workflows)
