"""The rules file (``MA_CONFIG``): typed models, the loader, durations and event matches."""

from pipeline.rules.durations import Duration, format_duration, parse_duration
from pipeline.rules.loader import RulesError, load_rules, parse_rules
from pipeline.rules.matching import EventMatch
from pipeline.rules.models import Rules, Site, TriggerRule
from pipeline.rules.watch import RulesWatcher

__all__ = [
    "Duration",
    "EventMatch",
    "Rules",
    "RulesError",
    "RulesWatcher",
    "Site",
    "TriggerRule",
    "format_duration",
    "load_rules",
    "parse_duration",
    "parse_rules",
]
