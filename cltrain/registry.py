"""Name -> object registries, so components are chosen by name from configs without if/elif factories."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from cltrain.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of components (learners, plugins, models, streams, schedules).

    Registering is done with a decorator on the component itself, so adding a method is one new file.
    """

    def __init__(self, kind: str, config_key: str):
        self.kind = kind
        self.config_key = config_key  # the config key users set to pick one, named in errors
        self._items: dict[str, T] = {}

    def register(self, name: str, **traits: object) -> Callable[[T], T]:
        """Register under `name`; `traits` (literal values) become attributes of the item, e.g. the config keys a
        stream family reads: `@STREAMS.register("rotated", reads=("max_angle",))`."""
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            for trait, value in traits.items():
                setattr(item, trait, value)
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            # Names starting with "_" are private (registered by tests at run time): not offered as choices, so the
            # message is the same as the config catalog's, which reads only the packages' files.
            public = [n for n in sorted(self._items) if not n.startswith("_")]
            raise ConfigError(f"{self.config_key}={name!r} is not a known {self.kind}; valid: {', '.join(public)}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
