"""Settings resolve flag > environment > config file > defaults, and bad values fail early."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from harvester.config import Secret, Settings, resolve
from harvester.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_target_the_real_service_within_published_limits() -> None:
    settings = resolve({}, None, environ={})
    assert settings.api_url == "https://api.uspto.gov"
    assert settings.concurrency == 1
    assert 0 < settings.rate <= 15
    assert settings.min_429_wait >= 5
    assert settings.api_key is None


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[api]\nrate = 2.0\nrows = 50\nconcurrency = 3\n")
    env = {"HARVESTER_RATE": "3.0", "HARVESTER_ROWS": "60"}
    settings = resolve({"rate": "7"}, cfg, environ=env)
    assert settings.rate == 7.0  # flag
    assert settings.rows == 60  # environment
    assert settings.concurrency == 3  # file
    assert settings.timeout == Settings().timeout  # default


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"concurrency": "0"}, "concurrency"),
        ({"rate": "fast"}, "rate"),
        ({"date_from": "2019-13-01"}, "date_from"),
        ({"date_from": "2019-02-01", "date_to": "2019-01-01"}, "invalid date range"),
        ({"api_url": "ftp://x"}, "api_url"),
        ({"rows": "0"}, "rows"),
        ({"out": "gs://bucket/x"}, "s3://"),
    ],
)
def test_bad_values_name_the_setting(flags: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve(flags, None, environ={})


def test_bad_env_value_names_its_origin() -> None:
    with pytest.raises(ConfigError, match=r"\$HARVESTER_CONCURRENCY"):
        resolve({}, None, environ={"HARVESTER_CONCURRENCY": "-1"})


def test_unknown_key_and_bad_toml_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve({}, write(tmp_path, "[api]\nrat = 1\n"), environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve({}, write(tmp_path, "[api\n"), environ={})
    with pytest.raises(ConfigError, match="not found"):
        resolve({}, tmp_path / "missing.toml", environ={})


def test_key_only_from_environment_and_never_printed() -> None:
    settings = resolve({}, None, environ={"USPTO_API_KEY": "sekrit-123"})
    assert isinstance(settings.api_key, Secret)
    assert settings.api_key.reveal() == "sekrit-123"
    assert "sekrit-123" not in repr(settings)
    assert "sekrit-123" not in str(settings.public_dict())
    assert settings.public_dict()["api_key_set"] is True


@pytest.mark.parametrize("name", ["default.toml", "demo.toml", "s3.example.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    settings = resolve({}, REPO / "configs" / name, environ={})
    assert settings.shard_size <= settings.max_window


def test_s3_storage_options_carry_endpoint() -> None:
    settings = resolve(
        {"out": "s3://b/p"}, None, environ={"HARVESTER_S3_ENDPOINT_URL": "http://127.0.0.1:5000"}
    )
    assert settings.storage_options() == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:5000"}
    }
    assert resolve({"date_to": "2019-01-31"}, None, environ={}).date_to == dt.date(2019, 1, 31)
