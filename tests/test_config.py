"""Configuration from the environment: what starts, what refuses to, and why."""

import logging

import pytest

from app import create_app
from config import ConfigError, Settings
from support import ENV, GATEWAY_KEY, PROVIDER_KEYS


def env(**overrides):
    return {k: v for k, v in {**ENV, **overrides}.items() if v is not None}


@pytest.mark.parametrize("keys", [None, "", " , ,"])
def test_no_gateway_keys_refuses_to_start_and_says_what_to_set(keys):
    with pytest.raises(ConfigError) as info:
        create_app(env(GATEWAY_API_KEYS=keys))

    message = str(info.value)
    assert "\n" not in message
    assert "GATEWAY_API_KEYS" in message and "GATEWAY_AUTH=disabled" in message


def test_auth_disabled_starts_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        app = create_app(env(GATEWAY_API_KEYS=None, GATEWAY_AUTH="disabled"))

    assert app.extensions["gateway"].auth_disabled
    assert "GATEWAY_AUTH=disabled" in caplog.text


def test_unknown_gateway_auth_value_is_refused():
    with pytest.raises(ConfigError, match="GATEWAY_AUTH"):
        create_app(env(GATEWAY_AUTH="off"))


def test_keys_are_split_on_commas_and_trimmed():
    settings = Settings.from_env({"GATEWAY_API_KEYS": " a ,b,, c "})

    assert len(settings.key_digests) == 3


def test_a_provider_is_configured_by_its_key():
    settings = Settings.from_env({"GATEWAY_API_KEYS": "k", "GROQ_API_KEY": "g"})

    assert list(settings.upstreams) == ["groq"]
    assert settings.upstreams["groq"].base_url == "https://api.groq.com/openai/v1"


def test_a_base_url_alone_does_not_configure_a_keyed_provider():
    settings = Settings.from_env({"GATEWAY_API_KEYS": "k", "OPENAI_BASE_URL": "http://x/v1"})

    assert settings.upstreams == {}


@pytest.mark.parametrize("name,default", [
    ("ollama", "http://localhost:11434/v1"), ("vllm", "http://localhost:8000/v1"),
])
def test_self_hosted_providers_need_a_url_or_a_key(name, default):
    prefix = name.upper()
    by_url = Settings.from_env({"GATEWAY_API_KEYS": "k", f"{prefix}_BASE_URL": "http://gpu:1/v1"})
    by_key = Settings.from_env({"GATEWAY_API_KEYS": "k", f"{prefix}_API_KEY": "s"})

    assert by_url.upstreams[name].base_url == "http://gpu:1/v1"
    assert by_key.upstreams[name].base_url == default


@pytest.mark.parametrize("name", ["azure", "oracle"])
def test_providers_without_a_fixed_host_need_a_base_url(name):
    with pytest.raises(ConfigError, match=f"{name.upper()}_BASE_URL"):
        Settings.from_env({"GATEWAY_API_KEYS": "k", f"{name.upper()}_API_KEY": "s"})


@pytest.mark.parametrize("url", ["api.openai.com/v1", "ftp://x/v1", "http://", "https:///v1"])
def test_a_base_url_must_be_http(url):
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        Settings.from_env({"GATEWAY_API_KEYS": "k", "OPENAI_API_KEY": "s", "OPENAI_BASE_URL": url})


def test_upstream_timeout_is_read_once_into_every_upstream():
    settings = Settings.from_env({"GATEWAY_API_KEYS": "k", "OPENAI_API_KEY": "s",
                                  "XAI_API_KEY": "x", "UPSTREAM_TIMEOUT": "7.5"})

    assert {u.read_timeout for u in settings.upstreams.values()} == {7.5}


@pytest.mark.parametrize("name,value", [
    ("UPSTREAM_TIMEOUT", "0"), ("UPSTREAM_TIMEOUT", "-1"), ("UPSTREAM_TIMEOUT", "soon"),
    ("UPSTREAM_TIMEOUT", "nan"), ("UPSTREAM_TIMEOUT", "inf"), ("WORKER_CONNECTIONS", "many"),
    ("BACKGROUND_THREADS", "0"),
])
def test_bad_numbers_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"GATEWAY_API_KEYS": "k", name: value})


def test_a_worker_class_other_than_gevent_or_gthread_is_refused():
    with pytest.raises(ConfigError, match="WORKER_CLASS"):
        Settings.from_env({"GATEWAY_API_KEYS": "k", "WORKER_CLASS": "sync"})
    with pytest.raises(ConfigError, match="GUNICORN_THREADS"):
        Settings.from_env({"GATEWAY_API_KEYS": "k", "WORKER_CLASS": "gthread",
                           "GUNICORN_THREADS": "many"})


@pytest.mark.parametrize("extra,runs,pool", [
    ({}, 4000, 8000),  # gevent: a run and a connection for each client connection
    ({"WORKER_CONNECTIONS": "100"}, 4000, 4100),
    ({"WORKER_CONNECTIONS": "100", "BACKGROUND_THREADS": "50"}, 50, 150),
    ({"WORKER_CLASS": "gthread"}, 16, 48),  # a thread each: 32 for requests, 16 for runs
    ({"WORKER_CLASS": "gthread", "GUNICORN_THREADS": "8"}, 16, 24),
])
def test_the_run_pool_and_connection_pools_follow_what_a_worker_serves(extra, runs, pool):
    settings = Settings.from_env({"GATEWAY_API_KEYS": "k", "GROQ_API_KEY": "g", **extra})

    assert settings.runner.threads == runs
    for session in (settings.upstreams["groq"].session, settings.upstreams["groq"].create_session):
        assert session.get_adapter("https://api.groq.com")._pool_maxsize == pool


def test_provider_keys_never_show_in_reprs():
    text = repr(Settings.from_env(env()))

    assert not [key for key in [GATEWAY_KEY, *PROVIDER_KEYS.values()] if key in text]


def test_the_default_store_is_a_sqlite_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    settings = Settings.from_env(env())

    assert str(settings.store) == f"SQLite at {tmp_path / 'gateway.sqlite3'}"
    assert settings.store.ttl == 30 * 24 * 3600
    assert (tmp_path / "gateway.sqlite3").exists()


def test_store_url_and_ttl_are_read(redis_url):
    settings = Settings.from_env(env(STORE_URL=redis_url, STORE_TTL="60"))

    assert str(settings.store).startswith("Redis at 127.0.0.1:") and settings.store.ttl == 60


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite:///:memory:", "redis://h:port/0",
                                 "sqlite:////no/such/dir/x.sqlite3"])
def test_a_store_url_the_gateway_cannot_use_refuses_to_start(url):
    with pytest.raises(ConfigError, match="STORE_URL") as info:
        Settings.from_env(env(STORE_URL=url))

    assert "\n" not in str(info.value)


def test_a_redis_password_never_appears_in_the_refusal():
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env(STORE_URL="redis://:sekret-pw@h:port/0"))

    assert "sekret-pw" not in str(info.value)


def test_a_redis_that_is_down_at_start_is_no_reason_to_refuse():
    settings = Settings.from_env(env(STORE_URL="redis://127.0.0.1:1/0"))

    assert str(settings.store) == "Redis at 127.0.0.1:1"


@pytest.mark.parametrize("ttl", ["0", "-5", "30d", "inf"])
def test_store_ttl_must_be_a_positive_number_of_seconds(ttl):
    with pytest.raises(ConfigError, match="STORE_TTL"):
        Settings.from_env(env(STORE_TTL=ttl))


def test_response_scope_is_key_or_shared():
    keys = {"GATEWAY_API_KEYS": "a,b"}
    assert len(Settings.from_env(keys).owners) == 2
    assert Settings.from_env({**keys, "RESPONSE_SCOPE": "shared"}).owners == {}
    with pytest.raises(ConfigError, match="RESPONSE_SCOPE"):
        Settings.from_env({**keys, "RESPONSE_SCOPE": "team"})
