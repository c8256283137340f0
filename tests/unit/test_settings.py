import pytest
from pydantic import ValidationError

from pipeline.settings import Settings, parse_link_secrets


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"MA_{name.upper()}", raising=False)
    settings = Settings()
    assert settings.clickhouse_url == "chdb://./data/clickhouse"
    assert settings.clickhouse_database == "ma"
    assert settings.http_port == 8080
    assert settings.topic("events") == "ma.events"
    assert settings.uses_local_broker
    assert settings.bootstrap == "127.0.0.1:9092"


def test_environment_variables_configure_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MA_KAFKA_BOOTSTRAP", "kafka:19092")
    monkeypatch.setenv("MA_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("MA_HTTP_PORT", "9000")
    settings = Settings()
    assert settings.bootstrap == "kafka:19092"
    assert not settings.uses_local_broker
    assert settings.topic("triggers") == "acme.triggers"
    assert settings.http_port == 9000


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.http_port = 1  # type: ignore[misc]


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MA_TOPIC_PARTITIONS", "zero")
    with pytest.raises(ValidationError, match="topic_partitions"):
        Settings()


def test_every_variable_is_documented_in_the_module_and_readme() -> None:
    import pipeline.settings as module
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    for name in Settings.model_fields:
        variable = f"MA_{name.upper()}"
        assert variable in (module.__doc__ or ""), f"{variable} missing from settings docstring"
        assert variable in readme, f"{variable} missing from README"


def test_link_secrets_first_key_signs() -> None:
    keys = parse_link_secrets("new:0123456789abcdef0,old:fedcba98765432100")
    assert list(keys) == ["new", "old"]


@pytest.mark.parametrize("text", ["", "nokid", "k:short", ":0123456789abcdef0"])
def test_link_secrets_refuse_bad_entries(text: str) -> None:
    with pytest.raises(ValueError, match="MA_LINK_SECRETS"):
        parse_link_secrets(text)


def test_as_env_round_trips() -> None:
    settings = Settings(kafka_bootstrap="x:1", http_port=1234)
    env = settings.as_env()
    assert env["MA_KAFKA_BOOTSTRAP"] == "x:1"
    assert env["MA_HTTP_PORT"] == "1234"


def test_the_batch_window_is_seconds_above_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MA_BATCH_WINDOW", raising=False)
    assert Settings().batch_window == 0.05
    monkeypatch.setenv("MA_BATCH_WINDOW", "0.02")
    assert Settings().batch_window == 0.02
    monkeypatch.setenv("MA_BATCH_WINDOW", "0")
    with pytest.raises(ValidationError, match="batch_window"):
        Settings()
