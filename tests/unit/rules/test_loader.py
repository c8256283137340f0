"""The rules file: the example parses, and every error names file, line and field."""

from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.rules import RulesError, RulesWatcher, load_rules, parse_rules
from tests.conftest import REPO

SITE = """
sites:
  - id: acme
    write_key: wk_12345678
    server_key: sk_1234567890123456
"""


def test_the_shipped_example_is_valid() -> None:
    rules = load_rules(REPO / "config" / "rules.yaml")
    assert rules.site("acme") is not None
    assert rules.scoring.half_life == timedelta(days=30)
    assert {r.channel for r in rules.triggers.rules} == {"email", "sales", "web"}
    assert rules.merge.policy("title") == ["crm", "form", "import"]
    assert rules.merge.policy("anything-else") == "latest"


def test_an_empty_file_means_no_rules() -> None:
    rules = parse_rules("")
    assert rules.sites == [] and rules.triggers.rules == []


def test_a_bad_duration_names_file_line_and_field() -> None:
    text = (
        SITE
        + """
triggers:
  rules:
    - id: t1
      when: {event: {type: page_view}}
      delay: 1x
      channel: email
"""
    )
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.yaml")
    assert caught.value.problems == [
        "rules.yaml:11: triggers.rules[0].delay: invalid duration '1x': expected a number and"
        " a unit, e.g. 30s, 15m, 2h, 1d, 1w"
    ]


def test_a_misspelt_field_is_refused_not_ignored() -> None:
    text = SITE + "scoring:\n  half_lfe: 30d\n"
    with pytest.raises(RulesError, match=r"rules.yaml:7: scoring.half_lfe: unknown field"):
        parse_rules(text, "rules.yaml")


def test_an_unknown_event_type_lists_the_known_ones() -> None:
    text = "scoring:\n  rules:\n    - {id: r, match: {type: pageview}, points: 1}\n"
    with pytest.raises(RulesError, match=r":3: scoring.rules\[0\].match.type: .*unknown event"):
        parse_rules(text, "rules.yaml")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(RulesError, match=r"rules.yaml:3: not valid YAML: .*starts on line 2"):
        parse_rules("sites:\n  - id: [unclosed\n", "rules.yaml")


def test_duplicate_rule_ids_are_refused() -> None:
    text = (
        "scoring:\n  rules:\n    - {id: r, match: {type: custom}, points: 1}\n"
        "    - {id: r, match: {type: custom}, points: 2}\n"
    )
    with pytest.raises(RulesError, match="appears twice"):
        parse_rules(text, "rules.yaml")


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("when: {}", "exactly one of event, count, score_at_least"),
        ("when: {score_at_least: 5}\n      requires: [anonymous]", "identified contacts only"),
        ("when: {score_at_least: 5}\n      requires: [identified, anonymous]", "both"),
    ],
)
def test_incoherent_triggers_are_refused(snippet: str, message: str) -> None:
    text = f"triggers:\n  rules:\n    - id: t\n      channel: web\n      {snippet}\n"
    with pytest.raises(RulesError, match=message):
        parse_rules(text, "rules.yaml")


def test_watcher_keeps_the_last_good_rules_when_the_file_breaks(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(SITE)
    watcher = RulesWatcher(path)
    assert watcher.rules.site("acme") is not None

    path.write_text(SITE + "scoring:\n  half_life: soon\n")
    assert watcher.poll() is False
    assert watcher.rules.site("acme") is not None
    assert watcher.last_error is not None
    assert "scoring.half_life" in str(watcher.last_error)

    path.write_text(SITE.replace("acme", "globex"))
    assert watcher.poll() is True
    assert watcher.rules.site("globex") is not None and watcher.last_error is None
    assert watcher.poll() is False  # unchanged since
