from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emojicam import config as cfgmod
from emojicam.config import Config, ConfigError, from_dict, load_config, parse_yaml

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def _flatten(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory) if callable(f.default_factory) else False:
            keys += _flatten(f.default_factory, f"{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(prefix + f.name)
    return keys


def test_repo_config_documents_every_setting_with_its_default():
    data = yaml.safe_load(REPO_CONFIG.read_text())
    assert from_dict(data) == Config(), "config.yaml must hold exactly the dataclass defaults"
    documented = []
    for key, value in data.items():
        documented += [f"{key}.{k}" for k in value] if isinstance(value, dict) else [key]
    assert sorted(documented) == sorted(_flatten(Config))
    # every setting line carries a comment
    text = REPO_CONFIG.read_text().splitlines()
    lines = [ln for ln in text if ln.strip() and not ln.lstrip().startswith("#")]
    leafs = [ln for ln in lines if not ln.rstrip().endswith(":")]
    undocumented = [ln for ln in leafs if "#" not in ln and not ln.startswith("mode:")]
    assert undocumented == []


def user_and_explicit_files(tmp_path: Path, monkeypatch, user_text: str, explicit_text: str) -> Path:
    """A user config file with ``user_text``; returns an explicit one with ``explicit_text``."""
    user = tmp_path / "user.yaml"
    user.write_text(user_text)
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(explicit_text)
    monkeypatch.setattr(cfgmod, "user_config_path", lambda: user)
    return explicit


def test_layers_user_file_then_explicit_path(tmp_path, monkeypatch):
    explicit = user_and_explicit_files(tmp_path, monkeypatch, "mode: label\ncamera:\n  width: 640\n",
                                       "camera:\n  height: 360\n")
    cfg = load_config(explicit)
    assert (cfg.mode, cfg.camera.width, cfg.camera.height) == ("label", 640, 360)
    assert cfg.camera.fps == 30.0  # untouched default
    assert load_config(explicit, use_user_file=False).mode == "replace"


def test_a_section_with_every_line_commented_out_changes_nothing(tmp_path, monkeypatch):
    """Users copy a section from config.yaml and comment out the lines they
    do not want; `camera:` alone is an empty section, not an error."""
    explicit = user_and_explicit_files(tmp_path, monkeypatch, "camera:\n  width: 640\n",
                                       "mode: label\ncamera:\n#  width: 800\nsmoothing:\n")
    cfg = load_config(explicit)
    assert (cfg.mode, cfg.camera.width, cfg.smoothing) == ("label", 640, Config().smoothing)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().mode = "off"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "smile"},
         "f.yaml: mode: expected one of replace, decorate, label, off, got 'smile'"),
        ({"smoothing": {"min_hold_s": -1}},
         "f.yaml: smoothing.min_hold_s: expected a number from 0 to 10, got -1"),
        ({"camera": {"width": 12.5}},
         "f.yaml: camera.width: expected a whole number from 16 to 7680, got 12.5"),
        ({"camera": {"mirror": "yes"}}, "f.yaml: camera.mirror: expected true or false, got 'yes'"),
        ({"detectr": {}}, "did you mean 'detector'?"),
        ({"camera": {"widht": 3}}, "f.yaml: camera.widht: unknown setting (did you mean 'camera.width'?)"),
        ({"camera": 5}, "f.yaml: camera: expected a mapping, got a number"),
        ({"sink": {"name": ""}}, "f.yaml: sink.name: expected a non-empty string, got ''"),
        # v4l2loopback keeps 31 bytes of card_label: the longer name would never be found
        ({"sink": {"name": "EmojiCam virtual camera (meetings)"}},
         "f.yaml: sink.name: expected a name of at most 31 bytes (the device keeps only that many)"),
        # the name goes into the modprobe lines doctor prints: "Bob's Cam" broke the shell line
        ({"sink": {"name": "Bob's Cam"}},
         "f.yaml: sink.name: expected a name without quotes, $, ` or \\ (it goes into shell commands)"),
        ({"detector": {"min_score": float("nan")}}, "f.yaml: detector.min_score: expected a number"),
        # at 0 every anchor counts: a frame full of emoji at 2 fps
        ({"privacy": {"min_score": 0}}, "f.yaml: privacy.min_score: expected a number from 0.05 to 1, got 0"),
        # the same for the detector's own threshold (replace mode covers from the lower of the two)
        ({"detector": {"min_score": 0}},
         "f.yaml: detector.min_score: expected a number from 0.05 to 1, got 0"),
        ({"camera": {"source": -3}},
         "f.yaml: camera.source: expected a whole number >= 0 or a string, got -3"),
    ],
)
def test_invalid_values_name_file_key_expected_and_actual(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(data, source="f.yaml")
    assert message in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("mode: replace\ncamera:\n  width: [1280\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line \d+, column \d+: YAML syntax error"):
        load_config(bad, use_user_file=False)


def test_error_names_the_layer_that_is_wrong(tmp_path, monkeypatch):
    user = tmp_path / "user.yaml"
    user.write_text("tracker:\n  hold_s: 99\n")
    monkeypatch.setattr(cfgmod, "user_config_path", lambda: user)
    with pytest.raises(ConfigError, match="user.yaml: tracker.hold_s"):
        load_config()


def test_missing_explicit_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/emojicam.yaml")


def test_yaml_is_loaded_safely():
    with pytest.raises(ConfigError):
        parse_yaml("!!python/object/apply:os.system ['echo pwned']", "evil.yaml")


def test_with_mode():
    assert Config().with_mode("label").mode == "label"
    with pytest.raises(ConfigError, match="mode"):
        Config().with_mode("nope")


# Any YAML document either loads into a valid Config or raises ConfigError.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_keys = st.one_of(st.sampled_from(_flatten(Config) + [k.split(".")[0] for k in _flatten(Config)]),
                  st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=5))
def test_fuzz_structured_documents(doc):
    text = yaml.safe_dump(doc)
    try:
        cfg = from_dict(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")
    else:
        assert from_dict(dataclasses.asdict(cfg)) == cfg  # what was accepted is valid


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text):
    try:
        cfg = from_dict(parse_yaml(text, "fuzz.yaml"), "fuzz.yaml")
    except ConfigError as exc:
        assert "fuzz.yaml" in str(exc)
    else:
        assert from_dict(dataclasses.asdict(cfg)) == cfg  # what was accepted is valid


def test_yaml_words_off_and_null_mean_the_words(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mode: off\nsink:\n  kind: null\n")
    loaded = load_config(cfg, use_user_file=False)
    assert (loaded.mode, loaded.sink.kind) == ("off", "null")
    with pytest.raises(ConfigError, match="camera.mirror: expected true or false"):
        from_dict({"camera": {"mirror": None}}, "f.yaml")


def test_user_folders_on_windows_are_not_doubled(monkeypatch):
    """platformdirs repeats the app name as the author's folder on Windows
    unless told not to; the README promises %LOCALAPPDATA%\\emojicam\\config.yaml."""
    import platformdirs
    import platformdirs.windows

    from emojicam import control, logs, models_install

    monkeypatch.setattr(platformdirs.windows, "get_win_folder", lambda csidl: "LOCALAPPDATA")
    monkeypatch.setattr(platformdirs, "PlatformDirs", platformdirs.windows.Windows)
    monkeypatch.setattr(logs.sys, "platform", "win32")
    found = {
        "config": cfgmod.user_config_path(),
        "models": models_install.user_models_dir(),
        "logs": logs.log_dir(),
        "runtime": control.runtime_dir(),
    }
    assert {k: p.as_posix() for k, p in found.items()} == {
        "config": "LOCALAPPDATA/emojicam/config.yaml",
        "models": "LOCALAPPDATA/emojicam/models",
        "logs": "LOCALAPPDATA/emojicam/Logs",
        "runtime": "LOCALAPPDATA/Temp/emojicam",
    }


def test_a_folder_where_a_settings_file_should_be_is_named(tmp_path, monkeypatch) -> None:
    """A user config that was a folder was silently ignored by every command."""
    from emojicam import config as config_module

    with pytest.raises(ConfigError, match="is a folder; give the path of a settings file"):
        load_config(tmp_path)
    monkeypatch.setattr(config_module, "user_config_path", lambda: tmp_path)
    with pytest.raises(ConfigError, match="is a folder, not a settings file"):
        load_config()


def test_a_setting_given_twice_is_an_error_naming_the_line() -> None:
    """PyYAML keeps the last of two equal keys silently: an old line lower in the
    file undid the user's new one above it."""
    with pytest.raises(ConfigError, match=r"f.yaml: line 3, column 1: 'mode' is set twice in the same"):
        parse_yaml("mode: label\ncamera: {width: 640, height: 480}\nmode: replace\n", "f.yaml")
    with pytest.raises(ConfigError, match="'width' is set twice"):
        parse_yaml("camera:\n  width: 640\n  width: 320\n", "f.yaml")
    assert parse_yaml("camera: {width: 640}\ndetector: {width: 3}\n") == {
        "camera": {"width": 640}, "detector": {"width": 3}}
    # a YAML merge key may repeat what it merges in: not a duplicate
    assert parse_yaml("a: &b {width: 640, height: 480}\ncamera:\n  <<: *b\n  width: 320\n")["camera"] == {
        "width": 320, "height": 480}


def test_a_file_that_is_not_utf8_names_the_line_and_how_to_fix_it(tmp_path):
    """Editors on Windows may save in the local code page (or UTF-16); the
    error said only 'invalid continuation byte'."""
    bad = tmp_path / "c.yaml"
    bad.write_bytes("mode: label\n# café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(bad, use_user_file=False)
    assert str(err.value) == f"{bad}: line 2: byte 0xe9 is not UTF-8 text; save the file as UTF-8"
    bad.write_bytes("mode: label\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"c\.yaml: line 1: byte 0xff is not UTF-8 text; save the file as"):
        load_config(bad, use_user_file=False)


def test_a_control_character_is_named_with_its_line_and_column():
    """A NUL (a file cut short by a crash) or a pasted escape code was reported
    as 'f.yaml:: YAML syntax error: ...', with no place to look."""
    with pytest.raises(ConfigError) as err:
        parse_yaml("mode: label\ncamera:\n  width: 640\x00\n", "f.yaml")
    assert str(err.value) == (
        "f.yaml: line 3, column 13: YAML syntax error: "
        "unacceptable character #x0000: special characters are not allowed"
    )
    with pytest.raises(ConfigError, match=r"^f\.yaml: line 1, column 1: YAML syntax error: unacceptable"):
        parse_yaml("\x1b[0mmode: label\n", "f.yaml")


def test_a_user_config_that_links_to_a_missing_file_is_an_error(tmp_path, monkeypatch):
    """A config.yaml linked into a dotfiles folder whose file moved (or that an
    editor is re-creating) was skipped silently: defaults ran, and a live reload
    dropped every setting instead of keeping the last good ones."""
    user = tmp_path / "config.yaml"
    try:
        user.symlink_to(tmp_path / "dotfiles" / "emojicam.yaml")
    except OSError as exc:  # Windows without the symlink privilege
        pytest.skip(f"cannot make a symlink here: {exc}")
    monkeypatch.setattr(cfgmod, "user_config_path", lambda: user)
    with pytest.raises(ConfigError) as err:
        load_config()
    assert str(err.value) == (
        f"{user}: is a link to {tmp_path / 'dotfiles' / 'emojicam.yaml'}, which does not exist; "
        "fix the link or remove it"
    )
    (tmp_path / "dotfiles").mkdir()
    (tmp_path / "dotfiles" / "emojicam.yaml").write_text("mode: label\n")
    assert load_config().mode == "label"
