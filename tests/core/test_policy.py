import pytest

from drossel.core.policy import DEFAULT_STAGES, Policy, PolicyError, parse_policy


def test_default_table_is_spec_section_4() -> None:
    table = [(s.start_day, s.throttle_minutes, s.block_minutes) for s in DEFAULT_STAGES]
    assert table == [
        (0, 0, 0),
        (30, 5, 0),
        (40, 10, 0),
        (50, 20, 0),
        (60, 30, 5),
        (70, 30, 10),
        (80, 30, 20),
        (90, 0, 60),
    ]


def test_parse_overrides_and_keeps_defaults() -> None:
    policy = parse_policy(
        """
        [policy]
        mode = "report-only"
        max_patch_lag_days = 30
        rollout = { "Exchange 2019" = "report-only" }
        [policy.replies]
        service = "mx.example.net"
        """
    )
    assert policy.mode == "report-only"
    assert policy.max_patch_lag_days == 30
    assert policy.rollout_for("Exchange 2019") == "report-only"
    assert policy.rollout_for("Exchange 2013") == "enforce"
    assert policy.replies.service == "mx.example.net"
    assert policy.stages == DEFAULT_STAGES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy]\nmode = 'loud'", "policy.mode"),
        ("[policy]\nmax_patch_lag_days = -1", "max_patch_lag_days"),
        ("[policy]\nunknown_key = 1", "unknown_key"),
        ("[policy]\nrollout = { 'Exchange 2003' = 'enforce' }", "unknown product"),
        (
            "[[policy.stages]]\nstart_day = 5\nthrottle_minutes = 1\nblock_minutes = 0",
            "first stage must start at day 0",
        ),
        (
            "[[policy.stages]]\nstart_day = 0\nthrottle_minutes = 50\nblock_minutes = 20",
            "must not exceed 60",
        ),
        ("[policy.replies]\nthrottle_text = '{oops}'", "only {service}"),
        ("[policy\n", "not valid TOML"),
    ],
)
def test_invalid_policies_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_policy(text)


def test_stages_must_increase() -> None:
    with pytest.raises(PolicyError, match="strictly increasing"):
        parse_policy(
            "[[policy.stages]]\nstart_day = 0\nthrottle_minutes = 0\nblock_minutes = 0\n"
            "[[policy.stages]]\nstart_day = 0\nthrottle_minutes = 5\nblock_minutes = 0\n"
        )


def test_policy_is_immutable() -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own error type
        Policy().mode = "off"  # type: ignore[misc]
