"""``core.frozen.fast_init`` builds exactly what the dataclass's own constructor builds."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from drossel.core.frozen import fast_init, maker


@dataclass(frozen=True, slots=True)
class Plain:
    a: str
    b: int = 2
    c: list[int] = field(default_factory=list)
    d: str | None = field(default=None, kw_only=True)


@fast_init
@dataclass(frozen=True, slots=True)
class Quick:
    a: str
    b: int = 2
    c: list[int] = field(default_factory=list)
    d: str | None = field(default=None, kw_only=True)


def _as_plain(q: Quick) -> Plain:
    return Plain(q.a, q.b, q.c, d=q.d)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("x",), {}), (("x", 5), {}), (("x", 5, [1]), {"d": "y"}), ((), {"a": "x", "c": [2]})],
)
def test_same_values_defaults_and_factories_as_the_dataclass(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    quick, plain = Quick(*args, **kwargs), Plain(*args, **kwargs)  # type: ignore[arg-type]
    assert type(quick) is Quick
    assert _as_plain(quick) == plain
    assert repr(quick) == repr(plain).replace("Plain", "Quick")
    assert Quick("x").c is not Quick("x").c  # a fresh list each time, as with the factory


def test_still_frozen_hashable_comparable_and_copyable() -> None:
    q = Quick("x", 1, [], d="z")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.a = "y"  # type: ignore[misc]
    assert q == Quick("x", 1, [], d="z") != Quick("y")
    assert pickle.loads(pickle.dumps(q)) == q == copy.deepcopy(q) == copy.copy(q)
    assert dataclasses.replace(q, b=9) == Quick("x", 9, [], d="z")
    assert not hasattr(q, "__dict__")


def test_hash_equals_the_dataclass_hash() -> None:
    @fast_init
    @dataclass(frozen=True, slots=True)
    class Key:
        a: str
        b: int

    @dataclass(frozen=True, slots=True)
    class Slow:
        a: str
        b: int

    assert hash(Key("x", 1)) == hash(Slow("x", 1)) == hash(("x", 1))
    assert len({Key("x", 1), Key("x", 1), Key("x", 2)}) == 2


def test_wrong_arguments_fail_as_before() -> None:
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'a'"):
        Quick()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'zz'"):
        Quick("x", zz=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick("x", 1, [], "positional d")  # type: ignore[misc]


def test_cannot_be_subclassed() -> None:
    with pytest.raises(TypeError, match="cannot be subclassed"):

        class Sub(Quick):  # type: ignore[misc]
            pass


def test_maker_builds_the_same_instance() -> None:
    make = maker(Quick)
    assert make("x", 5, [1], d="y") == Quick("x", 5, [1], d="y")
    assert type(make("x")) is Quick and make("x").c == [] and make("x").c is not make("x").c


def test_refuses_classes_it_cannot_build() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Derived(Plain):
        e: int = 0

    for cls in (NoSlots, NotFrozen, Post, Derived):
        with pytest.raises(TypeError):
            fast_init(cls)
