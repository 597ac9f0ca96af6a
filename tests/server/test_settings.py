from __future__ import annotations

from pathlib import Path

import pytest

from batcomputer.server.settings import Settings, SettingsError

DIGEST = "sha256:" + "ab" * 32


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 8080, 2)
    assert settings.cors_origins == ()
    assert settings.artifact == "" and settings.version is None and settings.digest is None


def test_every_contract_variable_is_read() -> None:
    settings = Settings.from_env({
        "BATCOMPUTER_ARTIFACT": "https://models.example/crime/1.2.3/",
        "BATCOMPUTER_VERSION": "1.2.3",
        "BATCOMPUTER_DIGEST": DIGEST,
        "BATCOMPUTER_MODEL_NAME": "crime-demo",
        "BATCOMPUTER_PORT": "9000",
        "BATCOMPUTER_WORKERS": "3",
        "BATCOMPUTER_HOST": "127.0.0.1",
        "BATCOMPUTER_CORS_ORIGINS": "https://a.example, https://b.example",
        "BATCOMPUTER_CACHE_DIR": "/tmp/cache",
        "BATCOMPUTER_FETCH_TIMEOUT": "2.5",
    })
    assert settings.artifact == "https://models.example/crime/1.2.3/"
    assert settings.version == "1.2.3" and settings.digest == DIGEST
    assert settings.model_name == "crime-demo"
    assert (settings.port, settings.workers, settings.host) == (9000, 3, "127.0.0.1")
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.cache_dir == Path("/tmp/cache")
    assert settings.fetch_timeout == 2.5


def test_flags_override_environment_and_none_means_unset() -> None:
    env = {"BATCOMPUTER_PORT": "9000", "BATCOMPUTER_VERSION": "1.0.0"}
    settings = Settings.from_env(env, port=7000, version=None)
    assert settings.port == 7000
    assert settings.version == "1.0.0"


@pytest.mark.parametrize(("env", "message"), [
    ({"BATCOMPUTER_PORT": "http"}, "BATCOMPUTER_PORT"),
    ({"BATCOMPUTER_PORT": "70000"}, "port"),
    ({"BATCOMPUTER_WORKERS": "0"}, "workers"),
    ({"BATCOMPUTER_DIGEST": "md5:abc"}, "digest"),
    ({"BATCOMPUTER_DIGEST": "sha256:" + "AB" * 32}, "digest"),
    ({"BATCOMPUTER_VERSION": "v1"}, "version"),
    ({"BATCOMPUTER_LOG_LEVEL": "loud"}, "log_level"),
    ({"BATCOMPUTER_ALLOW_PICKLE": "maybe"}, "BATCOMPUTER_ALLOW_PICKLE='maybe': expected true or false"),
])
def test_bad_values_are_refused_with_the_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_worker_model_is_gevent_unless_asked_otherwise() -> None:
    assert Settings().worker_class == "gevent"
    assert Settings.from_env({"BATCOMPUTER_WORKER_CLASS": "sync"}).worker_class == "sync"
    with pytest.raises(SettingsError, match="worker_class 'eventlet' is not one of gevent, sync"):
        Settings(worker_class="eventlet")


@pytest.mark.parametrize(("raw", "allowed"), [("false", False), ("0", False), ("No", False),
                                              ("true", True), ("1", True), ("yes", True)])
def test_pickles_are_allowed_unless_turned_off(raw: str, allowed: bool) -> None:
    assert Settings().allow_pickle is True  # the image turns it off (Dockerfile.server)
    assert Settings.from_env({"BATCOMPUTER_ALLOW_PICKLE": raw}).allow_pickle is allowed
    assert Settings.from_env({"BATCOMPUTER_ALLOW_PICKLE": raw}, allow_pickle=True).allow_pickle


def test_the_readme_gives_every_flag_and_every_setting() -> None:
    """The README's `serve` synopsis has exactly the flags `serve --help` has, and every
    setting is named, as a flag or a variable (issue 19: they had drifted apart)."""
    import argparse
    import dataclasses
    import re

    from batcomputer.server.cli import add_arguments

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    synopsis = readme.split("batcomputer serve [", 1)[1].split("```", 1)[0]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
    assert set(re.findall(r"--[a-z-]+", synopsis)) == flags
    variables = set(re.findall(r"BATCOMPUTER_[A-Z0-9_]+", readme))
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        assert flag in flags or f"BATCOMPUTER_{field.name.upper()}" in variables, field.name
