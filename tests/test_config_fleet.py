"""Configuration keys of the fleet: one test per mistake, full message."""

from __future__ import annotations

import os

import pytest

from ldaproute.config import Config, ConfigError, ThrottleStore

BASE = "[backend:b]\nurl = ldap://h\n[pool:p]\nbackends = b\n[route:r]\npool = p\n"


def load(text: str) -> Config:
    return Config.fromString("[ldaproute]\nlisten = tcp:1\n" + text + BASE)


def mistake(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(text)
    return str(e.value)


def test_defaults() -> None:
    config = load("")
    assert (config.throttleStore, config.metricsPerWorker, config.watchConfig) == (None, False, False)
    assert load("throttle_store = local\n").throttleStore is None


def test_redisStore(tmp_path: os.PathLike[str]) -> None:
    secret = os.path.join(str(tmp_path), "redis.pw")
    with open(secret, "w") as f:
        f.write("s3cret\nignored\n")
    config = load(f"throttle_store = rediss://redis.example:6380/2\nthrottle_store_password_file = {secret}\n"
                  f"throttle_store_ca_file = {secret}\nmetrics_per_worker = on\nwatch_config = yes\n")  # fmt: skip
    assert config.throttleStore == ThrottleStore(True, "redis.example", 6380, 2)
    assert config.throttleStore.url == "rediss://redis.example:6380/2"
    assert config.throttleStorePassword == "s3cret" and "s3cret" not in repr(config)
    assert (config.metricsPerWorker, config.watchConfig) == (True, True)
    assert load("throttle_store = redis://10.0.0.1\n").throttleStore == ThrottleStore(False, "10.0.0.1", 6379, 0)


def test_unknownScheme() -> None:
    assert mistake("throttle_store = memcached://h:11211\n") == (
        "routes.ini [ldaproute] throttle_store: expected local, redis://HOST:PORT/DB or rediss://HOST:PORT/DB, "
        "not 'memcached://h:11211'"
    )


def test_passwordInURL() -> None:
    assert mistake("throttle_store = redis://:hunter2@h:6379/0\n") == (
        "routes.ini [ldaproute] throttle_store: no credentials in the URL: put the password in "
        "throttle_store_password_file"
    )


def test_badDatabase() -> None:
    assert mistake("throttle_store = redis://h:6379/zero\n") == (
        "routes.ini [ldaproute] throttle_store: the path is the database number, as redis://host:6379/0, not '/zero'"
    )


def test_badPort() -> None:
    assert mistake("throttle_store = redis://h:port/0\n") == (
        "routes.ini [ldaproute] throttle_store: bad port in 'redis://h:port/0'"
    )


def test_passwordWithoutRedis(tmp_path: os.PathLike[str]) -> None:
    secret = os.path.join(str(tmp_path), "pw")
    with open(secret, "w") as f:
        f.write("x\n")
    assert mistake(f"throttle_store_password_file = {secret}\n") == (
        "routes.ini [ldaproute] throttle_store_password_file: only used with throttle_store = redis:// or rediss://"
    )


def test_emptyPasswordFile(tmp_path: os.PathLike[str]) -> None:
    secret = os.path.join(str(tmp_path), "pw")
    open(secret, "w").close()
    assert mistake(f"throttle_store = redis://h/0\nthrottle_store_password_file = {secret}\n") == (
        f"routes.ini [ldaproute] throttle_store_password_file: {secret!r} is empty: its first line is the password"
    )


def test_caFileWithoutTLS(tmp_path: os.PathLike[str]) -> None:
    ca = os.path.join(str(tmp_path), "ca.pem")
    open(ca, "w").close()
    assert mistake(f"throttle_store = redis://h/0\nthrottle_store_ca_file = {ca}\n") == (
        "routes.ini [ldaproute] throttle_store_ca_file: only used with rediss:// (Redis over TLS)"
    )


def test_switches() -> None:
    assert mistake("watch_config = sometimes\n") == (
        "routes.ini [ldaproute] watch_config: expected yes or no, not 'sometimes'"
    )
