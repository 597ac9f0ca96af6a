from __future__ import annotations

import pytest

from batcomputer.operator.settings import Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.namespaces == () and settings.field_manager == "batcomputer-operator"


def test_reads_prefixed_environment() -> None:
    settings = Settings.from_env({
        "BATCOMPUTER_OPERATOR_SERVER_IMAGE": "reg/server:9",
        "BATCOMPUTER_OPERATOR_NAMESPACES": "a, b,",
        "BATCOMPUTER_OPERATOR_RESYNC_SECONDS": "2.5",
        "BATCOMPUTER_OPERATOR_SERVER_WORKERS": "4",
        "BATCOMPUTER_OPERATOR_MEMORY_LIMIT": "1Gi",
        "BATCOMPUTER_OPERATOR_IMAGE_PULL_POLICY": "Always",
        "BATCOMPUTER_OPERATOR_POD_NAMESPACE": "ops",
        "UNRELATED": "x",
    })
    assert settings.operator_namespace == "ops"
    assert Settings().operator_namespace == "batcomputer-system"
    assert settings.server_image == "reg/server:9"
    assert settings.namespaces == ("a", "b")
    assert settings.resync_seconds == 2.5 and settings.server_workers == 4
    assert settings.default_resources["limits"] == {"memory": "1Gi"}
    assert settings.image_pull_policy == "Always"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("RESYNC_SECONDS", "soon", "not a number"),
    ("RESYNC_SECONDS", "0", "must be positive"),
    ("IMAGE_PULL_POLICY", "Sometimes", "Always, IfNotPresent or Never"),
])
def test_bad_settings_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({f"BATCOMPUTER_OPERATOR_{name}": value})


def test_the_webhook_is_on_when_the_api_server_can_be_told_where_it_is() -> None:
    assert not Settings.from_env({}).webhook
    local = Settings.from_env({"BATCOMPUTER_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
                               "BATCOMPUTER_OPERATOR_WEBHOOK_PORT": "19443"})
    assert local.webhook and local.webhook_port == 19443
    assert Settings.from_env({"BATCOMPUTER_OPERATOR_WEBHOOK_SERVICE": "sys/hook:8443"}).webhook
    with pytest.raises(ValueError, match="namespace/name"):
        Settings.from_env({"BATCOMPUTER_OPERATOR_WEBHOOK_SERVICE": "hook"})
    with pytest.raises(ValueError, match="port number"):
        Settings.from_env({"BATCOMPUTER_OPERATOR_WEBHOOK_PORT": "99999"})


def test_leader_election_settings() -> None:
    assert not Settings().leader_election and Settings().lease_seconds == 8
    settings = Settings.from_env({"BATCOMPUTER_OPERATOR_LEADER_ELECTION": "true",
                                  "BATCOMPUTER_OPERATOR_LEASE_NAME": "ops",
                                  "BATCOMPUTER_OPERATOR_LEASE_SECONDS": "12"})
    assert (settings.leader_election, settings.lease_name, settings.lease_seconds) == (True, "ops", 12)
    with pytest.raises(ValueError, match="must be true or false"):
        Settings.from_env({"BATCOMPUTER_OPERATOR_LEADER_ELECTION": "yes"})
    assert Settings.from_env({"BATCOMPUTER_OPERATOR_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    with pytest.raises(ValueError, match="debug, info, warning or error"):
        Settings.from_env({"BATCOMPUTER_OPERATOR_LOG_LEVEL": "loud"})
    with pytest.raises(ValueError, match="at least 3"):
        Settings.from_env({"BATCOMPUTER_OPERATOR_LEASE_SECONDS": "1"})
