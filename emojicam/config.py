"""Settings: ``config.yaml`` -> frozen, typed, per-stage dataclasses.

Layering, lowest first: the documented default ``config.yaml`` shipped with
the package, the user's copy in the platform config folder, ``--config PATH``.
Each layer may set any subset of keys. Everything is validated here, once;
past this module nobody sees raw dicts.

Errors are ``ConfigError`` and always name the file, the key, what was
expected and what was found, e.g.::

    ~/.config/emojicam/config.yaml: smoothing.min_hold_s: expected a number from 0 to 10, got -1
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from emojicam import assets
from emojicam.errors import EmojiCamError

Mode = Literal["replace", "decorate", "label", "off"]
MODES: tuple[str, ...] = typing.get_args(Mode)


class ConfigError(EmojiCamError, ValueError):
    """A config file could not be read or holds an invalid value."""


# Each field may carry metadata: min/max bounds checked by the loader.
def _num(default: float, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class CameraConfig:
    source: int | str = _num(0, 0)  # webcam index, device path, or a video file (looped)
    width: int = _num(1280, 16, 7680)
    height: int = _num(720, 16, 4320)
    fps: float = _num(30.0, 1, 240)
    mjpg: bool = True
    mirror: bool = False
    retry_initial_s: float = _num(0.5, 0.05, 60)
    retry_max_s: float = _num(5.0, 0.1, 600)


@dataclass(frozen=True)
class DetectorConfig:
    backend: Literal["auto", "blazeface", "haar"] = "auto"
    max_side_px: int = _num(480, 64, 4096)  # detect on a copy no larger than this
    min_face_px: int = _num(32, 4, 4096)  # in full-resolution pixels
    min_score: float = _num(0.5, 0.05, 1.0)  # at 0 every anchor is a face
    every_n_frames: int = _num(1, 1, 60)
    full_range: bool = True  # BlazeFace: also look for small, distant faces
    # BlazeFace: a model that sees no face lately looks for newcomers every Nth frame
    discovery_every_n_frames: int = _num(8, 1, 120)
    threads: int = _num(1, 1, 64)


@dataclass(frozen=True)
class ClassifierConfig:
    model: str | None = None  # None: the bundled models/emotion.tflite
    threads: int = _num(1, 1, 64)
    every_n_frames: int = _num(3, 1, 60)  # each face is classified on its first frame, then every Nth


@dataclass(frozen=True)
class TrackerConfig:
    iou_threshold: float = _num(0.3, 0.0, 1.0)
    hold_s: float = _num(0.5, 0.0, 10.0)  # keep a lost face this long


@dataclass(frozen=True)
class SmoothingConfig:
    half_life_s: float = _num(0.25, 0.0, 10.0)  # exponential smoothing of probabilities
    switch_margin: float = _num(0.10, 0.0, 1.0)  # new emotion must lead by this much
    min_hold_s: float = _num(0.6, 0.0, 10.0)  # shown emotion stays at least this long


@dataclass(frozen=True)
class EmojiConfig:
    folder: str | None = None  # None: the bundled emoji_pngs/
    replace_scale: float = _num(1.35, 1.0, 3.0)  # emoji side / face box side in replace mode
    badge_scale: float = _num(0.45, 0.1, 2.0)  # badge side / face box side in decorate mode
    rotate_with_head: bool = True


@dataclass(frozen=True)
class PrivacyConfig:
    enabled: bool = True  # in replace mode, never show a face the pipeline cannot cover
    action: Literal["blur", "blank"] = "blur"
    # replace mode: also cover faces the detector is this unsure of. From 0.05: at 0 every anchor
    # counts, and a frame fills with emoji at 2 fps.
    min_score: float = _num(0.3, 0.05, 1.0)


@dataclass(frozen=True)
class SinkConfig:
    kind: Literal["virtual", "preview", "null"] = "virtual"
    # v4l2loopback card label / Unity Capture device name. At most 31 bytes: v4l2loopback keeps
    # only that many of card_label, and a longer name would never be found. No quotes, $, `
    # or \: the name goes into the modprobe lines doctor and the error messages print.
    name: str = field(default="EmojiCam", metadata={"max_bytes": 31, "plain_name": True})
    backend: Literal["auto", "v4l2loopback", "unitycapture", "obs"] = "auto"
    device: str | None = None  # explicit /dev/videoN; None: look it up by name
    fps: float = _num(30.0, 1, 120)
    on_demand: bool = True  # Linux: release the webcam while no app watches


@dataclass(frozen=True)
class TrayConfig:
    enabled: bool = True
    icon_update_hz: float = _num(4.0, 0.1, 30)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Config:
    mode: Mode = "replace"
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    emoji: EmojiConfig = field(default_factory=EmojiConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    tray: TrayConfig = field(default_factory=TrayConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def with_mode(self, mode: str) -> Config:
        if mode not in MODES:
            raise ConfigError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        return dataclasses.replace(self, mode=mode)  # type: ignore[arg-type]


# ---------------------------------------------------------------- locations


def default_config_path() -> Path:
    """The documented defaults (repo root ``config.yaml``, shipped in the wheel)."""
    return assets.asset_path("config.yaml")


def user_config_path() -> Path:
    """The user's override file, e.g. ``~/.config/emojicam/config.yaml``."""
    from emojicam.assets import user_dirs

    return user_dirs().user_config_path / "config.yaml"


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, *, use_user_file: bool = True) -> Config:
    """Defaults, then the user file (if any), then ``path`` (if given)."""
    layers: list[Path] = [default_config_path()]
    user = user_config_path()
    if use_user_file and user.is_dir():  # not silently ignored: the user thinks it holds settings
        raise ConfigError(f"{user}: is a folder, not a settings file; remove it or put config.yaml's "
                          "lines you want to change in a file of that name")
    if use_user_file and user.is_symlink() and not user.exists():  # not silently ignored either
        raise ConfigError(f"{user}: is a link to {os.readlink(user)}, which does not exist; "
                          "fix the link or remove it")
    if use_user_file and user.is_file():
        layers.append(user)
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            raise ConfigError(f"{p}: is a folder; give the path of a settings file")
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        layers.append(p)
    merged: dict[str, Any] = {}
    for layer in layers:
        _check_and_merge(merged, read_yaml(layer), layer)
    return from_dict(merged, source=str(layers[-1]))


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse one YAML file safely; errors name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8"
        ) from exc
    return parse_yaml(text, str(path))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps
    the last silently: an edit lower in the file would undo one above it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:  # the keys as written (merge keys, "<<", may repeat others)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key_node.value!r} is set twice in the same section", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str = "<config>") -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line, mark.column) if mark else (None, None)
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: it has a position, no mark
            line = text.count("\n", 0, exc.position)
            column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        where = f" line {line + 1}, column {column + 1}:" if line is not None and column is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        kind = "" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error: "
        raise ConfigError(f"{source}:{where} {kind}{problem}") from exc
    except (ValueError, TypeError, RecursionError) as exc:  # odd tags, deep nesting
        raise ConfigError(f"{source}: cannot parse YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top, got {_kind(data)}")
    return data


def _check_and_merge(into: dict[str, Any], layer: dict[str, Any], source: Path) -> None:
    # Validate each layer on its own so errors name the file they are in.
    merged = _deep_merge(into, layer)
    from_dict(merged, source=str(source))
    into.update(merged)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if v is None and isinstance(out.get(k), dict):
            continue  # a section whose lines are all commented out changes nothing
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Build a validated ``Config``; raises ``ConfigError`` on any problem."""
    return _build(Config, data, source, prefix="")


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.')}: expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str) or key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            choices = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: {name}: unknown setting{hint}; known here: {choices}")
        f, hint = fields[key], hints[key]
        if dataclasses.is_dataclass(hint):
            section = {} if value is None else value  # `camera:` with every line under it commented out
            kwargs[key] = _build(hint, section, source, prefix=f"{name}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(hint, value, f.metadata, source, name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, meta: Any, source: str, name: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {name}: expected {expected}, got {_show(value)}")

    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        # YAML 1.1 reads a bare `off` as false and `null` as nothing; users
        # write `mode: off` and `kind: null` and mean the words.
        value = _YAML_WORDS.get((type(value), value), value) if value in (False, None) else value
        if value not in choices:
            raise bad("one of " + ", ".join(map(str, choices)))
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(opt, value, meta, source, name)
            except ConfigError as exc:
                errors.append(exc)
        names = [("null" if o is type(None) else o.__name__) for o in options]
        raise bad(" or ".join(_TYPE_WORDS.get(n, n) + (_bounds(meta) if n in ("int", "float") else "")
                              for n in names))
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number" + _bounds(meta))
        _check_bounds(value, meta, lambda: bad("a whole number" + _bounds(meta)))
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise bad("a number" + _bounds(meta))
        if value in (float("inf"), float("-inf")):
            raise bad("a finite number" + _bounds(meta))
        _check_bounds(value, meta, lambda: bad("a number" + _bounds(meta)))
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
        max_bytes = meta.get("max_bytes")
        if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
            raise bad(f"a name of at most {max_bytes} bytes (the device keeps only that many)")
        if meta.get("plain_name") and any(c in "\"'`$\\" or not c.isprintable() for c in value):
            raise bad("a name without quotes, $, ` or \\ (it goes into shell commands)")
        return value
    raise TypeError(f"config field {name} has unsupported type {hint}")  # programming error


_YAML_WORDS: dict[tuple[type, Any], str] = {(bool, False): "off", (type(None), None): "null"}

_TYPE_WORDS = {"int": "a whole number", "str": "a string", "float": "a number", "null": "null"}


def _bounds(meta: Any) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if lo is not None:
        return f" >= {lo:g}"
    if hi is not None:
        return f" <= {hi:g}"
    return ""


def _check_bounds(value: float, meta: Any, error: Any) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error()


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


# A bounded repr: a YAML alias bomb expands to a huge nested list, and plain
# repr() of it would take minutes and gigabytes.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 2, 4, 4
_SHORT_REPR.maxstring, _SHORT_REPR.maxother = 50, 50


def _show(value: Any) -> str:
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
