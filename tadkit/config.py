"""Typed configuration: dataclasses filled from YAML and ``--set`` overrides.

A config is a (nested) dataclass with defaults. :func:`load_config` merges,
in order, the defaults, a YAML file and ``key.path=value`` overrides, checking
every key and type on the way:

>>> cfg = load_config(TrainConfig, "configs/mltpn/thumos14.yaml",
...                   overrides=["optim.lr=0.01", "epochs=20"])

Unknown keys, wrong types, values out of range and malformed overrides raise
:class:`tadkit.errors.ConfigError` naming the offending key (and the file).
Override values are parsed as YAML scalars/lists (``lr=1e-3``,
``milestones=[10,20]``, ``name=null``). :func:`save_config` writes the
resolved config so every run can be reproduced from its output directory.

Ranges. A config class declares the allowed range of its numeric keys with
:func:`config_ranges` (interval notation; list values are checked element by
element, nested lists too, mapping values one by one)::

    @config_ranges(epochs="[1, inf)", lr="(0, inf)", overlap="[0, 1)")
    @dataclass
    class Train: ...

and every float value must be finite unless its range closes at ``inf``. A
value outside gives ``key 'train.epochs' must be >= 1, got 0``; a config built
in code checks the same ranges (``ValueError``) before its own ``__post_init__``,
which keeps only the checks that tie keys together.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar, Union

import yaml

from tadkit.errors import ConfigError
from tadkit.files import number_problem, read_text

T = TypeVar("T")


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: Iterable[str] = ()) -> T:
    """Build a ``cls`` instance from defaults, an optional YAML file and overrides."""
    data: dict[str, Any] = {}
    overrides = list(overrides)
    source = "--set" if overrides else "config"
    if path is not None:
        source = f"{path} (with --set)" if overrides else str(path)
        data = _read_yaml(Path(path))
    for item in overrides:
        key, value = parse_override(item)
        _set_path(data, key.split("."), value)
    return from_dict(cls, data, source=source)


@dataclasses.dataclass(frozen=True)
class Interval:
    """An interval of allowed values, parsed from ``"[0, 1)"``, ``"(0, inf)"``, ``"[1, inf)"``, ..."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> "Interval":
        m = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^\]\s)]+)\s*([\])])\s*", text)
        try:
            low, high = float(m.group(2)), float(m.group(3))  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            raise ValueError(f"not an interval like '[0, 1)': {text!r}") from None
        return cls(low, high, m.group(1) == "[", m.group(4) == "]")

    def __contains__(self, x: float) -> bool:
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return bool(above and below)

    def describe(self) -> str:
        """``>= 1``, ``> 0`` or ``in [0, 1)``."""
        lo, hi = f"{self.low:g}", f"{self.high:g}"
        if self.high == math.inf and not self.high_closed:
            return (">= " if self.low_closed else "> ") + lo
        return f"in {'[' if self.low_closed else '('}{lo}, {hi}{']' if self.high_closed else ')'}"


def config_ranges(**intervals: str) -> Callable[[type[T]], type[T]]:
    """Class decorator declaring the allowed ranges of a config dataclass's keys (see the module docstring)."""
    parsed = {key: Interval.parse(text) for key, text in intervals.items()}

    def declare(cls: type[T]) -> type[T]:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(parsed) - names)
        if unknown:
            raise TypeError(f"config_ranges on {cls.__name__}: no such field(s) {unknown}")
        cls.__config_ranges__ = {**getattr(cls, "__config_ranges__", {}), **parsed}  # type: ignore[attr-defined]
        # the ranges hold for configs built in code too: checked before the class's own __post_init__
        # (which may divide by a key), or after __init__ when it has none (the dataclass __init__
        # calls __post_init__ only if the class had one when it was made)
        own_post_init = getattr(cls, "__post_init__", None)
        if own_post_init is not None:
            def __post_init__(self: Any) -> None:
                _check_ranges(self)
                own_post_init(self)
            cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
        else:
            init = cls.__init__

            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                init(self, *args, **kwargs)
                _check_ranges(self)
            cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return declare


def _check_ranges(cfg: Any) -> None:
    """``ValueError`` if a config built in code has a key outside its declared range."""
    for name, interval in type(cfg).__config_ranges__.items():
        try:
            _check_range(getattr(cfg, name), interval, name, type(cfg).__name__)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``"a.b=value"`` into ``("a.b", parsed value)``."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r} ({exc})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"override {key}: cannot parse the value ({number_problem(exc)})") from None
    return key, value


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "config", _prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from a mapping, checking keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {_prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = _prefix + str(unknown[0])
        raise ConfigError(f"{source}: unknown key {key!r} (valid keys here: {', '.join(sorted(fields))})")
    ranges: Mapping[str, Interval] = getattr(cls, "__config_ranges__", {})
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{_prefix}{name}", source)
        _check_range(kwargs[name], ranges.get(name), f"{_prefix}{name}", source)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field without default was not given
        raise ConfigError(f"{source}: {_prefix.rstrip('.') or 'config'}: {exc}") from None
    except ValueError as exc:  # __post_init__ validation
        raise ConfigError(f"{source}: {_prefix.rstrip('.') or 'config'}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data (YAML/JSON-able) view of a config dataclass."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------- helpers
def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: invalid YAML ({number_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {k!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``tp``; returns the (possibly converted) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail() -> ConfigError:
        return ConfigError(f"{source}: key {key!r} expects {_type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, source=source, _prefix=key + ".") if isinstance(value, Mapping) else _raise(fail())
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key, source)
            except ConfigError as exc:
                errors.append(exc)
        raise fail()
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{source}: key {key!r} must be one of {list(args)}, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise fail()
            return tuple(_coerce(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise fail()
        vt = args[1] if args else Any
        return {k: _coerce(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise fail()
    return value


def _check_range(value: Any, interval: Interval | None, key: str, source: str) -> None:
    """``ConfigError`` if a number (or a list's element, a mapping's value) is outside ``interval``,
    or a float is not finite."""
    if isinstance(value, Mapping):
        items: list[tuple[Any, Any]] = list(value.items())
    else:
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
    for i, x in items:
        name = key if i is None else f"{key}[{i}]"
        if isinstance(x, (list, tuple, Mapping)):  # nested lists (e.g. [[0, 0.15], ...]) element by element
            _check_range(x, interval, name, source)
            continue
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        if interval is not None and x not in interval:
            raise ConfigError(f"{source}: key {name!r} must be {interval.describe()}, got {x!r}")
        if isinstance(x, float) and not math.isfinite(x) and not (interval and interval.high_closed):
            raise ConfigError(f"{source}: key {name!r} must be a finite number, got {x!r}")


def _raise(exc: Exception) -> Any:
    raise exc


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")
