"""Configuration: file, environment and flags, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushd.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_toml_lists_exactly_the_defaults() -> None:
    """config.toml is the documentation of every setting: it must match the code."""
    assert load_config(ROOT / "config.toml", environ={}) == Config()
    text = (ROOT / "config.toml").read_text()
    for section in Config.__struct_fields__:
        assert f"[{section}]" in text
        for key in getattr(Config(), section).__struct_fields__:
            assert f"\n{key} = " in text, f"config.toml does not list {section}.{key}"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9001\nhost = "0.0.0.0"\n[bus]\nshards = 8\n')
    config = load_config(
        path,
        environ={"PUSHD_SERVER__PORT": "9002", "PUSHD_STORAGE__URL": "postgresql://db/x"},
        overrides={"server": {"port": 9003}},
    )
    assert config.server.port == 9003
    assert config.server.host == "0.0.0.0"
    assert config.bus.shards == 8
    assert config.storage.url == "postgresql://db/x"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[server]\nport = "eighty"\n', "`server.port`: expected `int`, got `str`"),
        ("[server]\nprot = 1\n", "unknown setting `server.prot`"),
        ("[sever]\nport = 1\n", "unknown setting `sever`"),
        ("[actors]\nmailbox_size = 0\n", "`actors.mailbox_size`: expected `int` >= 1"),
        ('[log]\nlevel = "loud"\n', "`log.level`"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="PUSHD_SERVER__PORT"):
        load_config(None, environ={"PUSHD_SERVER__PORT": "abc"})
    with pytest.raises(ConfigError, match=r"no setting `server\.nope`"):
        load_config(None, environ={"PUSHD_SERVER__NOPE": "1"})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", environ={})


def test_storage_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    config = load_config(None, environ={"PUSHD_SERVER__DATA_DIR": str(tmp_path)})
    assert config.storage_url == f"sqlite:///{tmp_path / 'pushd.db'}"
