"""`nias.settings`: one typed settings object read from the environment."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nias.errors import ConfigurationError
from nias.settings import ENVIRONMENT, Settings, load_settings, require


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_apply_when_the_environment_is_empty(tmp_path):
    settings = load_settings({})
    assert settings.data_dir == tmp_path / "shared-volume"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.amqp_heartbeat_s == 60
    assert settings.queue_prefix == "nias"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.producer_url == "http://127.0.0.1:8081"
    assert settings.backend_url == "http://127.0.0.1:8080"
    assert (settings.unit_url, settings.unit_name) == ("http://127.0.0.1:8090", "unit-1")
    assert (settings.max_upload_mb, settings.max_files, settings.max_unpacked_mb) == (200, 10_000, 2_048)
    assert (settings.max_ratio, settings.max_result_mb) == (200, 1_024)
    assert (settings.job_timeout_s, settings.job_retries, settings.lease_s) == (3_600, 2, 60)
    assert settings.kill_grace_s == 5.0
    assert settings.log_level == "INFO"
    assert settings.database_url == ""


def test_the_derived_folders_default_to_places_in_the_data_dir(tmp_path):
    settings = load_settings({}, unit_name="unit-7")
    data = tmp_path / "shared-volume"
    assert settings.jobs_dir == data / "jobs"
    assert settings.uploads_dir == data / "uploads"
    assert settings.unit_work_dir == data / "work" / "unit-7"
    assert settings.environments_dir == data / "envs"


def test_the_megabyte_limits_are_also_given_in_bytes():
    settings = load_settings({"NIAS_MAX_UPLOAD_MB": "3", "NIAS_MAX_UNPACKED_MB": "5", "NIAS_MAX_RESULT_MB": "7"})
    assert settings.max_upload_bytes == 3 * 1024 * 1024
    assert settings.max_unpacked_bytes == 5 * 1024 * 1024
    assert settings.max_result_bytes == 7 * 1024 * 1024


def test_every_settings_field_is_read_from_exactly_one_variable():
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert sorted(ENVIRONMENT.values()) == sorted(fields)


# Values that pass each variable's own check; every other variable gets a sample of its type.
VALID_TEXT = {"NIAS_REGISTRATION": "open", "NIAS_EXECUTOR": "local"}
FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def sample(variable: str) -> tuple[str, object]:
    kind = FIELD_TYPES[ENVIRONMENT[variable]]
    if kind.startswith("Path"):
        return "/srv/nias-sample", Path("/srv/nias-sample")
    if kind == "int":
        return "7", 7
    if kind == "float":
        return "2.5", 2.5
    text = VALID_TEXT.get(variable, f"sample-{variable.lower()}")
    return text, text


@pytest.mark.parametrize("variable", sorted(ENVIRONMENT))
def test_each_variable_is_read_and_typed(variable):
    raw, expected = sample(variable)
    value = getattr(load_settings({variable: raw}), ENVIRONMENT[variable])
    assert value == expected
    assert type(value) is type(expected)


def test_numbers_are_typed_as_ints_and_floats():
    settings = load_settings({"NIAS_PORT": "9000", "NIAS_KILL_GRACE_S": "0.25", "NIAS_WORK_DIR": "/scratch/w"})
    assert settings.port == 9000 and type(settings.port) is int
    assert settings.kill_grace_s == 0.25 and type(settings.kill_grace_s) is float
    assert settings.work_dir == Path("/scratch/w") and settings.unit_work_dir == Path("/scratch/w")


def test_a_variable_set_to_an_empty_string_keeps_its_default():
    settings = load_settings({"NIAS_PORT": "", "NIAS_QUEUE_PREFIX": "", "NIAS_WORK_DIR": ""})
    assert (settings.port, settings.queue_prefix, settings.work_dir) == (8080, "nias", None)


def test_the_environment_is_read_from_os_environ_when_none_is_given(monkeypatch):
    monkeypatch.setenv("NIAS_LEASE_S", "17")
    assert load_settings().lease_s == 17


def test_an_override_wins_over_the_environment():
    assert load_settings({"NIAS_LEASE_S": "17"}, lease_s=3).lease_s == 3


@pytest.mark.parametrize("variable, raw", [
    ("NIAS_PORT", "eighty"),
    ("NIAS_MAX_FILES", "10k"),
    ("NIAS_JOB_RETRIES", "2.5"),
    ("NIAS_KILL_GRACE_S", "soon"),
])
def test_a_malformed_number_fails_naming_its_variable(variable, raw):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({variable: raw})
    assert variable in caught.value.message
    assert repr(raw) in caught.value.message


@pytest.mark.parametrize("variable, raw", [("NIAS_JOB_RETRIES", "-1"), ("NIAS_LEASE_S", "-60"),
                                           ("NIAS_KILL_GRACE_S", "-0.5")])
def test_a_negative_number_is_refused_naming_its_variable(variable, raw):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({variable: raw})
    assert variable in caught.value.message
    assert "negative" in caught.value.message


def test_a_relative_data_dir_is_made_absolute(tmp_path):
    settings = load_settings({"NIAS_DATA_DIR": "lab/data"})
    assert settings.data_dir.is_absolute()
    assert settings.data_dir == tmp_path / "lab" / "data"


def test_a_data_dir_given_as_override_is_made_absolute(tmp_path):
    assert load_settings({}, data_dir="elsewhere").data_dir == tmp_path / "elsewhere"


def test_the_store_defaults_to_sqlite_in_the_data_dir(tmp_path):
    settings = load_settings({"NIAS_DATA_DIR": "data"})
    assert settings.store_url.startswith("sqlite:///")
    database = Path(settings.store_url.removeprefix("sqlite:///"))
    assert database.is_absolute()
    assert database.name == "nias.db"
    assert (tmp_path / "data") in database.parents


def test_database_url_replaces_the_default_store():
    url = "postgresql+psycopg://nias@db:5432/nias"
    assert load_settings({"DATABASE_URL": url}).store_url == url


def test_settings_are_frozen():
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_registration_outside_open_invite_closed_is_refused_naming_the_variable():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"NIAS_REGISTRATION": "everyone"})
    assert "NIAS_REGISTRATION" in caught.value.message


def test_a_missing_required_setting_fails_naming_its_variable():
    with pytest.raises(ConfigurationError) as caught:
        require(load_settings({}), "internal_token")
    assert "NIAS_INTERNAL_TOKEN" in caught.value.message
    require(load_settings({"NIAS_INTERNAL_TOKEN": "s3cret"}), "internal_token")


def test_secrets_are_not_shown_when_settings_are_printed():
    settings = load_settings({
        "NIAS_INTERNAL_TOKEN": "token-value-1", "NIAS_SECRET_KEY": "key-value-2",
        "NIAS_ADMIN_PASSWORD": "password-value-3", "NIAS_AMQP_URL": "amqp://u:amqp-pass-4@h/%2F",
        "DATABASE_URL": "postgresql+psycopg://u:db-pass-5@h/db",
    })
    shown = repr(settings)
    for secret in ("token-value-1", "key-value-2", "password-value-3", "amqp-pass-4", "db-pass-5"):
        assert secret not in shown
    assert "queue_prefix='nias'" in shown
