"""A tiny name -> builder registry, shared by backbones and detection heads.

>>> HEADS = Registry("detection head")
>>> @HEADS.register("mltpn")
... def build_mltpn(**kw): ...
>>> HEADS.get("mltpn")       # the builder
>>> HEADS.names()            # ['mltpn']

Asking for an unknown name raises :class:`tadkit.errors.ConfigError` listing
the registered names, so a typo on the command line is a one-line error.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from tadkit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one ``kind`` of thing (e.g. ``"backbone"``) -> their builders."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a builder (function or class) under ``name``.

        Registering the same name twice is a programming error (``ValueError``).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The builder registered under ``name``; ``ConfigError`` if there is none."""
        try:
            return self._items[name]
        except KeyError:
            available = ", ".join(self.names()) or "(none registered)"
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {available}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
