"""The ``[milter]`` settings this package reads: defaults and refusals of bad values."""

from __future__ import annotations

import pytest

from drossel.config import ConfigError, config_from_dict


def test_defaults_are_the_documented_bounds() -> None:
    milter = config_from_dict({}).milter
    assert milter.idle_timeout == 330.0  # above Postfix's smtpd_timeout of 300 s
    assert milter.max_connections == 512
    assert (milter.max_received_headers, milter.max_received_bytes) == (200, 65536)
    assert milter.event_loop == "auto"


@pytest.mark.parametrize(
    "bad",
    [
        {"header_name": "X Drossel"},  # space
        {"header_name": "X-Drossel:"},  # colon
        {"header_name": ""},
        {"idle_timeout": 7200},  # an hour at most
        {"idle_timeout": 0},
        {"max_connections": 0},
        {"max_received_bytes": 10},
        {"event_loop": "trio"},
    ],
)
def test_bad_values_are_refused_with_the_key(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=f"milter.{next(iter(bad))}"):
        config_from_dict({"milter": bad})
