"""Typed config objects, resolved in one order: argument > environment > packaged default.

Every config class in the package is a frozen dataclass whose fields are declared with
:func:`setting`. The CLI builds its options from the same fields (:func:`add_options`), so
the command line cannot drift from the library.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ConfigError

C = TypeVar("C")

_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING, *, help: str, env: str | None = None, cli: bool = True, shown: str | None = None
) -> Any:
    """A config field with a help text and, optionally, the environment variable that sets it.

    ``shown`` replaces the default in ``--help`` when the real default comes from elsewhere.
    """
    metadata = {"help": help, "env": env, "cli": cli, "shown": shown}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults; config objects are immutable")
    return dataclasses.field(default=default, metadata=metadata)


def fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def coerce(value: Any, annotation: Any, name: str) -> Any:
    """Turn ``value`` (often a string from the environment or the command line) into ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], name)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(coerce(v.strip() if isinstance(v, str) else v, args[0], name) for v in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: {value!r} is not a boolean (use true or false)")
    if annotation in (int, float, str):
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name}: {value!r} is not an integer")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {value!r} is not a valid {annotation.__name__}") from None
    return value


def resolve(
    cls: type[C],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    base: C | None = None,
) -> C:
    """Build ``cls`` from ``overrides`` (arguments), then the environment, then the defaults.

    ``None`` in ``overrides`` means "not given". Unknown keys are an error that lists the valid
    ones. ``base``, when given, supplies the defaults instead of the class (a named preset).
    """
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    valid = field_names(cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for {cls.__name__}; valid options: {', '.join(valid)}"
        )
    values: dict[str, Any] = {}
    for f in fields(cls):
        annotation = _field_type(cls, f)
        env = f.metadata.get("env")
        if overrides.get(f.name) is not None:
            values[f.name] = coerce(overrides[f.name], annotation, f.name)
        elif env and environ.get(env, "") != "":
            values[f.name] = coerce(environ[env], annotation, env)
    config = dataclasses.replace(base, **values) if base is not None else cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def explicit(cls: type, overrides: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Names of the fields that ``overrides`` or the environment set (not left to the default)."""
    environ = os.environ if environ is None else environ
    given = {k for k, v in (overrides or {}).items() if v is not None}
    for f in fields(cls):
        env = f.metadata.get("env")
        if env and environ.get(env, "") != "":
            given.add(f.name)
    return given


def as_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config object (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def add_options(parser: argparse.ArgumentParser, cls: type, *, only: tuple[str, ...] | None = None) -> None:
    """Add one ``--option`` per field of ``cls`` (or per field named in ``only``); the parsed
    value is ``None`` when not given."""
    title = cls.__doc__.strip().splitlines()[0].rstrip(".") if cls.__doc__ else cls.__name__
    group = parser.add_argument_group(title)
    unknown = set(only or ()) - set(field_names(cls))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    for f in fields(cls):
        if (only is not None and f.name not in only) or not f.metadata.get("cli", True):
            continue
        annotation = _field_type(cls, f)
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is _MISSING else f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        shown = f.metadata.get("shown") or shown
        notes = [f"default: {shown}"] if shown not in (None, "") else []
        if f.metadata.get("env"):
            notes.append(f"env {f.metadata['env']}")
        help_text = f.metadata.get("help", "") + (f" ({'; '.join(notes)})" if notes else "")
        if annotation is bool:
            group.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            metavar = f.name.upper()
            group.add_argument(flag, dest=f.name, default=None, metavar=metavar, help=help_text)


def options_from(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The subset of parsed ``args`` that belongs to ``cls`` (unset options stay ``None``)."""
    return {name: getattr(args, name, None) for name in field_names(cls)}
