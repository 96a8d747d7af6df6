"""Policy: every number and switch of the enforcement schedule, validated.

The policy is the ``[policy]`` part of drossel's TOML configuration.  Parsing TOML text is done
here (pure); reading the file is the caller's job.  Errors name the offending key so an operator
can fix the file without reading code.
"""

from __future__ import annotations

import tomllib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drossel.core.build import ON_PREMISES_PRODUCTS

Mode = Literal["enforce", "report-only", "off"]
Rollout = Literal["enforce", "report-only"]
Status = Literal["current", "behind", "unsupported", "unknown", "not_applicable"]


class PolicyError(ValueError):
    """The policy is invalid; the message is meant for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(_Strict):
    """One row of the schedule table (SPEC §4)."""

    start_day: int = Field(ge=0)
    throttle_minutes: int = Field(ge=0, le=60)
    block_minutes: int = Field(ge=0, le=60)

    @model_validator(mode="after")
    def _fits_in_hour(self) -> Stage:
        if self.throttle_minutes + self.block_minutes > 60:
            raise ValueError("throttle_minutes + block_minutes must not exceed 60")
        return self


DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage(start_day=0, throttle_minutes=0, block_minutes=0),
    Stage(start_day=30, throttle_minutes=5, block_minutes=0),
    Stage(start_day=40, throttle_minutes=10, block_minutes=0),
    Stage(start_day=50, throttle_minutes=20, block_minutes=0),
    Stage(start_day=60, throttle_minutes=30, block_minutes=5),
    Stage(start_day=70, throttle_minutes=30, block_minutes=10),
    Stage(start_day=80, throttle_minutes=30, block_minutes=20),
    Stage(start_day=90, throttle_minutes=0, block_minutes=60),
)

DEFAULT_THROTTLE_TEXT = (
    "Connecting Exchange server version is out-of-date; connection to {service} throttled for "
    "{minutes} mins/hr. For more information see {url}"
)
DEFAULT_BLOCK_TEXT = (
    "Connecting Exchange server version is out-of-date; connection to {service} blocked for "
    "{minutes} mins/hr. For more information see {url}"
)


class Replies(_Strict):
    service: str = "this mail service"
    url: str = "https://aka.ms/BlockUnsafeExchange"
    throttle_text: str = DEFAULT_THROTTLE_TEXT
    block_text: str = DEFAULT_BLOCK_TEXT

    @model_validator(mode="after")
    def _templates_render(self) -> Replies:
        for name in ("throttle_text", "block_text"):
            try:
                getattr(self, name).format(service="s", minutes=1, url="u")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{name}: only {{service}}, {{minutes}} and {{url}} may be used ({exc})"
                ) from None
        return self


class Policy(_Strict):
    """The validated enforcement policy, with the defaults of SPEC §4–§6."""

    mode: Mode = "enforce"
    stages: tuple[Stage, ...] = DEFAULT_STAGES
    max_patch_lag_days: int = Field(default=90, ge=0, le=3650)
    enforced_statuses: tuple[Literal["unsupported", "behind"], ...] = ("unsupported", "behind")
    rollout: dict[str, Rollout] = Field(default_factory=dict)
    """Per product: "enforce" (default) or "report-only" (staged rollout, SPEC §4)."""
    enforced_connector_types: tuple[Literal["OnPremises", "Partner", "Any", "Default"], ...] = (
        "OnPremises",
        "Partner",
        "Any",
        "Default",
    )
    """Connector types whose mail is enforced; "Default" is mail that matches no connector."""
    enforce_unverified: bool = False
    """Enforce sightings whose server is not tied to the connecting client (SPEC §3)."""
    pause_budget_days: int = Field(default=90, ge=0, le=366)
    regression_window_days: int = Field(default=30, ge=0)
    inactive_after_days: int = Field(default=60, ge=1)
    notice_days_before_throttle: int = Field(default=7, ge=0)
    trusted_hosts: tuple[str, ...] = ()
    replies: Replies = Replies()

    @model_validator(mode="after")
    def _check(self) -> Policy:
        if not self.stages or self.stages[0].start_day != 0:
            raise ValueError("stages: the first stage must start at day 0")
        days = [s.start_day for s in self.stages]
        if days != sorted(set(days)):
            raise ValueError("stages: start_day values must be strictly increasing")
        for product in self.rollout:
            if product not in ON_PREMISES_PRODUCTS:
                raise ValueError(
                    f"rollout: unknown product {product!r}; use one of "
                    + ", ".join(ON_PREMISES_PRODUCTS)
                )
        return self

    def rollout_for(self, product: str) -> Rollout:
        return self.rollout.get(product, "enforce")


def policy_from_dict(data: dict[str, Any]) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_describe(exc)) from None


def parse_policy(text: str) -> Policy:
    """Parse a TOML document whose ``[policy]`` table (or top level) is the policy."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy: not valid TOML: {exc}") from None
    table = data.get("policy", {})
    if not isinstance(table, dict):
        raise PolicyError("policy: [policy] must be a table")
    return policy_from_dict(table)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "policy"
        parts.append(f"policy.{where}: {error['msg']}")
    return "; ".join(parts)
