"""Typed task configs: dataclasses are the schema, YAML files and ``key=value`` overrides fill them.

A task config is a dataclass whose fields are plain values or nested dataclasses (sections).
Each field's comment-like ``help`` metadata documents it; ``Literal`` types list the valid
choices. Unknown keys and bad values are rejected with the valid keys or choices named.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is not valid (one line, names the key and what is expected)."""


def check_batch(inputs: Any, what: str = "texts", call: str = "predict", fix: str | None = None) -> None:
    """``call`` (``predict``, ``translate``, ``transcribe`` ...) takes a list of ``what``: a bare string
    (which Python would iterate character by character, one result per character) is a one-line
    ``TypeError`` with the fix (default ``call([x])``)."""
    if isinstance(inputs, str | bytes | Path):
        raise TypeError(f"{call} takes a list of {what}, got a single {type(inputs).__name__} "
                        f"({str(inputs)[:40]!r}); wrap it in a list: {fix or call + '([x])'}")


def check_cell(value: str, key: str = "model.cell") -> None:
    """A registered cell name, or a one-line error listing them."""
    from ..cells import CELLS

    if value.lower().replace("-", "_") not in CELLS:
        raise ConfigError(f"{key}: {value!r} is not valid; choose one of {', '.join(sorted(CELLS))}")


def check_at_least_one(*pairs: tuple[str, int]) -> None:
    """Each ``(key, value)`` must be >= 1, or a one-line error names the key."""
    for key, value in pairs:
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")


def check_rates(*pairs: tuple[str, float]) -> None:
    """Each ``(key, rate)`` must be in [0, 1), or a one-line error names the key."""
    for key, rate in pairs:
        if not 0 <= rate < 1:
            raise ConfigError(f"{key}: must be in [0, 1), got {rate}")


def check_lr_decay(value: float | None, patience: int = 1) -> None:
    """``train.lr_decay`` must be null or in (0, 1] and ``train.lr_decay_patience`` at least 1, or a
    one-line error says what they do."""
    if value is not None and not 0 < value <= 1:
        raise ConfigError(f"train.lr_decay: must be in (0, 1], got {value}; 0.25 divides the learning rate by 4 "
                          "after each epoch without dev improvement")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ConfigError(f"train.lr_decay_patience: must be a whole number >= 1, got {patience!r}; 3 cuts the "
                          "learning rate after every 3 epochs in a row without dev improvement")


def check_early_stopping_and_clipping(patience: int | None, clip_norm: float | None, weight_decay: float) -> None:
    """``train.patience`` null or >= 1, ``train.clip_norm`` null or > 0 and ``train.weight_decay`` >= 0, or a
    one-line error names the key (0 or less would stop after one epoch, turn clipping off, or, for a negative
    clip norm, flip the gradients' sign)."""
    if patience is not None and patience < 1:
        raise ConfigError(f"train.patience: must be >= 1 (or null to never stop early), got {patience}; "
                          "1 stops after the first epoch without dev improvement")
    if clip_norm is not None and not clip_norm > 0:
        raise ConfigError(f"train.clip_norm: must be > 0 (or null for no clipping), got {clip_norm}")
    if weight_decay < 0:
        raise ConfigError(f"train.weight_decay: must be >= 0, got {weight_decay}")


LR_DECAY_HELP = ("multiply the learning rate by this after train.lr_decay_patience epochs without dev improvement "
                 "(null: keep it)")
LR_DECAY_PATIENCE_HELP = ("epochs in a row without dev improvement before each learning-rate cut (1: every such "
                          "epoch; raise it when dev accuracy is noisy)")
MAX_MINUTES_HELP = ("time budget in minutes: stop before an epoch that would end past it, keeping the best dev "
                    "weights (null: no budget)")


def check_max_minutes(value: float | None) -> None:
    """``train.max_minutes`` must be null or positive."""
    if value is not None and not value > 0:
        raise ConfigError(f"train.max_minutes: must be > 0 (or null for no time budget), got {value}")


def seconds_budget(minutes: float | None) -> float | None:
    """``train.max_minutes`` as the engine's ``max_seconds``."""
    return None if minutes is None else 60.0 * minutes


# Lightning's precisions (``Trainer(precision=...)``), then its short aliases for them; PrecisionName, the type
# of every task's ``train.precision``, takes both (``--print-config`` lists them)
PrecisionName = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32", "16", "bf16", "64"]
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}
PRECISIONS = tuple(name for name in get_args(PrecisionName) if name not in PRECISION_ALIASES)
PRECISION_HELP = ("numerical precision of training, as Lightning names it: 32-true (float32), bf16-mixed or 16-mixed "
                  "(float32 weights, matmuls under autocast; 16-mixed needs a GPU, on CPU Lightning takes bf16-mixed), "
                  "bf16-true, 16-true or 64-true (the whole model in that dtype while training); the run folder's "
                  "weights, inference and metrics stay float32")


def check_precision(value: Any, key: str = "train.precision") -> PrecisionName:
    """The Lightning precision ``value`` names (an alias such as ``bf16`` as its full name ``bf16-mixed``),
    or a one-line error naming the accepted values."""
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text in PRECISIONS:
        return cast(PrecisionName, text)
    if text in PRECISION_ALIASES:
        return cast(PrecisionName, PRECISION_ALIASES[text])
    raise ConfigError(f"{key}: {shown(value)} is not valid; choose one of {', '.join(PRECISIONS)} "
                      f"(or the aliases {', '.join(PRECISION_ALIASES)})")


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (shown by ``--print-config``)."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def section(cls: type[T], help: str) -> Any:
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if get_origin(tp) in (list, tuple) and get_args(tp):
        return f"list of {_type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _expected(tp: Any) -> str:
    """What a value of type ``tp`` must be, in words: ``a number``, ``a list of integers or null``."""
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(tp))
    if origin in (list, tuple):
        item = (get_args(tp) or (Any,))[0]
        words = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {words[item]}" if item in words else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(tp, _type_name(tp))


def shown(value: Any) -> str:
    """A config value as the YAML or ``--set`` the user wrote reads: ``null``, ``true``, ``'abc'``, ``3``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclasses.dataclass(frozen=True)
class Written:
    """A plain YAML scalar (unquoted, from a config file or ``--set``) read as a bool or a number,
    with the text as written: a string field keeps the text (a column named ``no`` or ``2024``, a
    label column ``007``) where YAML 1.1 would have turned it into ``False``, ``2024``, ``7``."""

    value: Any
    text: str


def _number(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _unwritten(value: Any) -> Any:
    """``value`` with every :class:`Written` inside it replaced by the bool or number YAML read."""
    if isinstance(value, Written):
        return value.value
    if isinstance(value, list | tuple):
        return type(value)(_unwritten(v) for v in value)
    if isinstance(value, dict):
        return {_unwritten(k): _unwritten(v) for k, v in value.items()}
    return value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    written = value
    text = None
    if isinstance(value, Written):
        value, text = value.value, value.text
    said = text if text is not None else shown(value)  # in errors: the value as the user wrote it
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices and text in choices:  # a choice YAML reads as a bool or number
            return text
        if value not in choices:
            raise ConfigError(f"{key}: {said} is not valid; choose one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            with contextlib.suppress(ConfigError):
                return _coerce(written, arg, key)
        if type(None) in args and isinstance(value, str) and value.strip().lower() in ("none", "null", "~"):
            return None  # --set train.max_minutes=none, as Python writes null
        raise ConfigError(f"{key}: expected {_expected(tp)}, got {said}")
    if origin in (list, tuple):
        (item,) = get_args(tp)[:1] or (Any,)
        if text is not None:  # one item written bare: quantiles=0.5
            value = [written]
        elif isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
            if item in (int, float):  # "0.1,0.9" from the command line: read each number
                value = [_number(v) for v in value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected {_expected(tp)}, got {said}")
        return [_coerce(v, item, key) for v in value]
    if tp is Any:  # as YAML reads it: no Written left inside a list or mapping
        return _unwritten(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | str) and str(value).strip().lower() in _TRUE + _FALSE:  # 1/0, "yes"
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false (or yes/no, 1/0), got {said}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {said}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
        raise ConfigError(f"{key}: expected a number, got {said}")
    if tp is str:
        if text is not None:  # data.text_column=no is the column 'no', not 'False'
            return text
        if isinstance(value, str):
            return value
        if value is None or isinstance(value, dict | list):  # not the text 'None' or "{'a': 1}"
            raise ConfigError(f"{key}: expected a string, got {said}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a config dataclass from nested dicts, checking keys and types."""
    if not isinstance(data, dict):
        shown_data = data.text if isinstance(data, Written) else repr(data)  # as written, never Written(...)
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {shown_data}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        close = _closest(cls, str(unknown[0]))
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; valid keys here: {', '.join(sorted(fields))}"
                          + (f"; did you mean {prefix}{close}?" if close else ""))
    values = {}
    for name, value in data.items():
        tp = hints[name]
        if isinstance(value, dict) and not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{prefix}{name} is a value, not a section: give {prefix}{name}=VALUE "
                              f"(keys under it: {', '.join(map(str, value))})")
        if dataclasses.is_dataclass(tp):
            values[name] = from_dict(tp, value or {}, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            values[name] = _coerce(value, tp, f"{prefix}{name}")
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def _closest(cls: type, key: str) -> str | None:
    """The valid key nearest to the unknown ``key`` in config class ``cls``: a key at this level
    (``hiden_size`` -> ``hidden_size``, ``lr`` -> ``learning_rate`` by initials) or, failing that, one in a section below (``epochs`` ->
    ``train.epochs``)."""
    import difflib

    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    initials = [name for name in names if "_" in name and "".join(w[:1] for w in name.split("_")) == key.lower()]
    if len(initials) == 1:  # lr -> learning_rate, wd -> weight_decay
        return initials[0]
    try:
        rows = [row[0] for row in describe(cls)]
    except TypeError:  # a section without defaults: no suggestion
        return None
    leaves: dict[str, str] = {}
    for row in rows:
        leaves.setdefault(row.rsplit(".", 1)[-1], row)
    close = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.8)
    return leaves[close[0]] if close else None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"model.hidden_size=256"`` -> (["model", "hidden_size"], 256); values are read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. model.hidden_size=256)")
    key, raw = item.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise ConfigError(f"override {item!r}: the key {key.strip()!r} has an empty part; write it as "
                          "section.key=value (e.g. model.hidden_size=256)")
    try:  # as a config file reads it: a bool or number keeps its text, in a list or mapping too ([no, 2024])
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is a value, not a section")
        node[path[-1]] = value
    return data


def reading_overrides(current: T, overrides: Sequence[str], readable: Sequence[str], command: str = "--set") -> T:
    """The run's data config ``current`` with ``data.KEY=VALUE`` overrides applied, for reading new
    files at evaluate or predict time. Only the ``readable`` keys (how files are read: columns,
    formats, encoding errors) may change; the others were fixed by training, and changing one is a
    one-line error that names the keys that can change."""
    data = apply_overrides({"data": dataclasses.asdict(current)}, list(overrides))  # type: ignore[call-overload]
    if set(data) != {"data"}:
        raise ConfigError(f"{command} accepts data.* keys only, got {', '.join(sorted(set(data) - {'data'}))}")
    new = from_dict(type(current), data["data"], "data.")
    for f in dataclasses.fields(new):  # type: ignore[arg-type]
        before, after = getattr(current, f.name), getattr(new, f.name)
        if after != before and f.name not in readable:
            can = ", ".join(f"data.{k}" for k in readable) or "none"
            raise ConfigError(f"{command} data.{f.name}: fixed at training (the run was trained with {before!r}); "
                              f"keys that change how files are read here: {can}")
    return new


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Defaults <- ``base`` <- YAML file <- ``key=value`` overrides, validated into ``cls``."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {'is a folder, not a file' if p.is_dir() else 'not found'}: {p}")
        try:
            loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except UnicodeDecodeError as err:
            raise ConfigError(f"{p} is not a UTF-8 text file (byte {err.start}: {err.reason}); "
                              "save the config as UTF-8 YAML") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{p} is not valid YAML: {_yaml_problem(err)}") from None
        if loaded is None:  # an empty file (or only comments): the defaults
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of keys (section: key: value, as --print-config writes), "
                              f"got a value of type {type(loaded).__name__}: {str(loaded)[:40]}")
        data = _merge(data, loaded)
    return from_dict(cls, apply_overrides(data, overrides or []))


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    silently, so a second ``model:`` section would drop the first one's keys)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            with contextlib.suppress(TypeError):  # an unhashable key: SafeLoader's own error follows
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given again (first on line {seen[key].line + 1}); give each key "
                        "once", key_node.start_mark)
                seen[key] = key_node.start_mark
        mapping = super().construct_mapping(node, deep=deep)
        return {k.value if isinstance(k, Written) else k: v for k, v in mapping.items()}


def _construct_written(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """Plain scalars that YAML reads as bools or numbers keep their text (see :class:`Written`)."""
    return Written(yaml.SafeLoader.yaml_constructors[node.tag](loader, node), node.value)


for _tag in ("bool", "int", "float"):
    _UniqueKeyLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _construct_written)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error in one line, with the line and column of the problem."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (f"{problem} ({context})" if context else str(problem))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """Rows ``(key, type, default, help)`` for every option, sections flattened with dots."""
    rows: list[tuple[str, str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    default_obj = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            rows.append((f"{prefix}{f.name}", _type_name(tp), getattr(default_obj, f.name), f.metadata.get("help", "")))
    return rows


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
