"""Reading config files and checking their values: what the training and the zero-shot configs share.

`ConfigLoader` reads YAML 1.2 numbers (`1e-3` is a float); `load_yaml` refuses empty and non-mapping files;
`check_values` checks every field of a config dataclass against its type hint and a table of rules (ranges,
choices, paths that stay inside a folder), so a wrong value is one `ConfigError` line naming the dotted key,
the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any

import yaml

from clipseg_lab.errors import ConfigError

EXAMPLE_CONFIG = "configs/smoke_synthetic_clipseg.yaml"


class ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads YAML 1.2 floats such as `1e-3`, `5E-4`, `1e3`, `1.0e3`. PyYAML follows YAML
    1.1, whose floats need a dot and a signed exponent, so `lr: 1e-3` would be the string '1e-3'. A subclass: the
    global SafeLoader (other libraries' YAML) is left as it is."""


ConfigLoader.add_implicit_resolver(  # appended after the YAML 1.1 resolvers: ints and dotted floats resolve as before
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def load_yaml(path: str | Path, example: str = EXAMPLE_CONFIG) -> dict[str, Any]:
    """A config file's top-level mapping, read with `ConfigLoader`. An unreadable file, an empty one (or only
    comments / null: it would silently run every default) and a top level that is not a mapping are errors."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=ConfigLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from exc
    if data is None or data == {}:
        raise ConfigError(f"{path}: the config is empty; start from one in configs/ (e.g. {example})")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of `key: value` lines at the top level, not a "
                          f"{type(data).__name__}")
    return data


# -- checking values against the type hints -----------------------------------------------------------------
_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "true/false values"), type(None): ("null", "nulls"),
          dict: ("a mapping", "mappings"), list: ("a list", "lists"), tuple: ("a list", "lists")}


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a, plural) for a in args)
    if hint is Any:
        return "anything"
    if origin in (list, tuple) and args:
        return f"{'lists' if plural else 'a list'} of {_describe(args[0], True)}"
    if origin is dict and args:
        return f"{'mappings' if plural else 'a mapping'} of {_describe(args[0], True)} to {_describe(args[1], True)}"
    return _NAMES.get(origin, (origin.__name__,) * 2)[plural]


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # bool is an int to Python, but `epochs: true` is a mistake
        return hint is bool
    if hint is float:  # ints are numbers too; nan and inf are not (they would train or compare silently wrong)
        return isinstance(value, (int, float)) and math.isfinite(value)
    if origin in (list, tuple):  # YAML has only lists
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, Mapping) and (not args or all(_fits(k, args[0]) and _fits(v, args[1])
                                                             for k, v in value.items()))
    return isinstance(value, origin)


def show(value: Any) -> str:
    """A value as the YAML that gave it: null, true, 0.001, 'two'."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


Rule = tuple[Callable[[Any], bool], str]  # (the test, what is allowed, as the message says it)


def one_of(*choices: str) -> Rule:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


def _inside(path: str) -> bool:
    parts = PurePath(path).parts  # "" and "." have none: the folder itself, not a path inside it
    return bool(parts) and not PurePath(path).is_absolute() and ".." not in parts and not path.startswith("~")


def relative_path(what: str) -> Rule:
    """A relative path that stays inside its folder: an absolute one or one with `..` could write anywhere."""
    return _inside, f"a relative path inside {what} (not absolute, no '..')"


def check_values(obj: Any, rules: Mapping[str, Rule], prefix: str = "",
                 aliases: Mapping[type, Mapping[str, str]] | None = None) -> None:
    """Check every field of a dataclass (recursively) against its type hint and `rules[dotted key]`; the first
    wrong one is a `ConfigError`. A rule is not applied to None (in a `X | None` field it means default or off).
    `aliases` maps a dataclass to {field: the key the YAML uses}, so the message names what the user wrote."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.metadata.get("yaml", True):
            continue
        key, value = prefix + (aliases or {}).get(type(obj), {}).get(f.name, f.name), getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, rules, key + ".", aliases)
            continue
        hint = hints[f.name]
        if isinstance(value, os.PathLike) and _fits("", hint):  # a Path where a path string goes: the API's habit
            value = os.fspath(value)
            setattr(obj, f.name, value)
        test, allowed = rules.get(key, (None, _describe(hint)))
        if test is not None and _fits(None, hint):
            allowed += " or null"
        if not _fits(value, hint) or (value is not None and test is not None and not test(value)):
            raise ConfigError(f"{key}: {show(value)} is not allowed; {allowed}")
