"""Configuration: file, environment and flags, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushd.config.settings import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


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


_CHANNELS_TOML = """
[channels]
poll_interval = 0.5
plans = { default = [{ channel = "push", delay = 30.0 }, { channel = "email", delay = 600.0 }] }

[[channels.email]]
name = "relay-1"
host = "smtp.example.com"
from_address = "notifications@example.com"

[[channels.email]]
name = "relay-2"
host = "smtp2.example.com"
from_address = "notifications@example.com"

[[channels.sms]]
kind = "http"
name = "gateway"
url = "https://sms.example.com/send"
from_number = "pushd"
"""


def test_channel_providers_are_arrays_of_tables_in_fallback_order(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_CHANNELS_TOML)
    channels = load_config(path, environ={}).channels
    assert [p.name for p in channels.email] == ["relay-1", "relay-2"]
    assert [p.name for p in channels.sms] == ["gateway"]
    assert [(s.channel, s.delay) for s in channels.plans["default"]] == [
        ("push", 30.0),
        ("email", 600.0),
    ]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[[channels.email]]\nname = "a"\nfrom_address = "a@b.c"\nhots = "x"\n',
            "unknown setting `channels.email[0].hots`",
        ),
        (
            '[[channels.sms]]\nkind = "carrier-pigeon"\nname = "a"\n',
            "`channels.sms[0].kind`: invalid value",
        ),
        ('[channels]\nplans = { default = [{ channel = "fax" }] }\n', "channels.plans"),
        (
            '[[channels.email]]\nname = "a"\nfrom_address = "a@b.c"\n'
            '[[channels.email]]\nname = "a"\nfrom_address = "a@b.c"\n',
            "provider names used twice",
        ),
        ('[channels]\npublic_url = "http://push.example.com"\n', "public_url must be"),
    ],
)
def test_channel_errors_name_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert expected in str(error.value)


def test_provider_secrets_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_CHANNELS_TOML)
    environ = {
        "PUSHD_CHANNELS__EMAIL__RELAY_2__PASSWORD": "hunter2-relay-two",
        "PUSHD_CHANNELS__SMS__GATEWAY__AUTH_VALUE": "Bearer sms-key",
    }
    channels = load_config(path, environ=environ).channels
    assert [p.password for p in channels.email] == ["", "hunter2-relay-two"]
    assert channels.sms[0].auth_value == "Bearer sms-key"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("PUSHD_CHANNELS__EMAIL__RELAY_3__PASSWORD", "no [[channels.email]] provider is named"),
        ("PUSHD_CHANNELS__EMAIL__RELAY_1__HOST", "for these settings only"),
        ("PUSHD_CHANNELS__EMAIL__PASSWORD", "for these settings only"),
    ],
)
def test_provider_secret_errors_name_the_variable_not_the_value(
    tmp_path: Path, variable: str, expected: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_CHANNELS_TOML)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={variable: "the-secret-value"})
    assert variable in str(error.value)
    assert expected in str(error.value)
    assert "the-secret-value" not in str(error.value)


def test_a_required_secret_may_be_only_in_the_environment(tmp_path: Path) -> None:
    """The file is checked with the secrets the environment gives it: an APNs provider
    whose private_key (required) is only in PUSHD_CHANNELS__APNS__... is valid."""
    path = tmp_path / "c.toml"
    path.write_text('[[channels.apns]]\nname = "apple"\nteam_id = "T"\nkey_id = "K"\n')
    environ = {"PUSHD_CHANNELS__APNS__APPLE__PRIVATE_KEY": "/etc/pushd/AuthKey.p8"}
    assert load_config(path, environ=environ).channels.apns[0].private_key == (
        "/etc/pushd/AuthKey.p8"
    )
    with pytest.raises(ConfigError, match="private_key"):
        load_config(path, environ={})
