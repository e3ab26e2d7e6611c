import pytest

from batchery.settings import Settings


def test_settings_come_from_batchery_variables_with_types():
    settings = Settings.from_env({"BATCHERY_PORT": "9000", "BATCHERY_PREDICT_TIMEOUT_S": "2.5", "BATCHERY_REDIS_URL": "redis://r:1/2", "PORT": "1"})
    assert settings.port == 9000 and settings.predict_timeout_s == 2.5
    assert settings.effective_redis_url == "redis://r:1/2"
    assert settings.effective_broker_url == "redis://r:1/2", "the broker defaults to the Redis URL"


def test_broker_can_differ_and_defaults_apply():
    settings = Settings.from_env({"BATCHERY_BROKER_URL": "amqp://guest@localhost//"})
    assert settings.effective_broker_url == "amqp://guest@localhost//"
    assert (settings.port, settings.flower_port, settings.host) == (8000, 5555, "127.0.0.1")


def test_a_bad_value_names_the_variable():
    with pytest.raises(ValueError, match="BATCHERY_CHUNK_SIZE"):
        Settings.from_env({"BATCHERY_CHUNK_SIZE": "many"})


def test_settings_round_trip_through_the_environment():
    settings = Settings(port=8123, chunk_size=64, models_file="/m.toml")
    assert Settings.from_env(settings.as_env()) == settings
