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


def test_api_keys_are_a_comma_list_and_the_client_key_falls_back_to_the_first():
    settings = Settings.from_env({"BATCHERY_API_KEYS": " k1 , k2,, "})
    assert settings.api_key_list == ("k1", "k2") and settings.api_keys_configured
    assert settings.client_api_key == "k1"
    assert Settings(api_key="mine", api_keys="k1").client_api_key == "mine"
    assert not Settings().api_keys_configured and Settings(api_keys_file="/k").api_keys_configured
    assert "k1" not in repr(settings), "secrets stay out of the settings' repr"


def test_load_takes_what_the_environment_leaves_unset_from_a_running_up(tmp_path):
    """A second shell has none of `batchery up`'s URLs in its environment: the state file under the data dir
    has them while that `batchery up` runs."""
    import os

    from batchery import stack

    env = {"BATCHERY_DATA_DIR": str(tmp_path)}
    assert Settings.load(env).redis_url == "", "nothing running: nothing taken"
    stack.write(tmp_path, stack.Stack(os.getpid(), "redis://127.0.0.1:4242/0", "http://127.0.0.1:8123"))
    found = Settings.load(env)
    assert (found.redis_url, found.client_url) == ("redis://127.0.0.1:4242/0", "http://127.0.0.1:8123")
    other = Settings.load({**env, "BATCHERY_REDIS_URL": "redis://elsewhere:6379/0"})
    assert (other.redis_url, other.client_url) == ("redis://elsewhere:6379/0", "http://127.0.0.1:8000"), "another stack's"
    assert Settings.from_env(env).redis_url == "", "from_env reads the environment alone"
    assert oct(stack.state_path(tmp_path).stat().st_mode & 0o777) == "0o600", "a Redis URL may hold a password"
    stack.write(tmp_path, stack.Stack(2**22 + 12345, "redis://127.0.0.1:4242/0", "http://127.0.0.1:8123"))
    assert Settings.load(env).redis_url == "", "a stale file (its up was killed) is ignored"
