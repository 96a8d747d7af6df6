"""Fixtures for end-to-end tests with private Postfix instances on loopback.

Topology built by the fixtures::

    client --> sending_postfix --> receiving_postfix (+ optional milter) --> sink
                     |
                     +-- mail for AUTHOR_DOMAIN (e.g. NDRs to the author) --> author_sink

Fixtures (all function scoped, everything is stopped in teardown, also on failure):

* ``sink`` / ``author_sink``: started :class:`harness.sink.SmtpSink` objects.
* ``receiving_postfix(milter_port=None, *, milter_default_action="tempfail", **kw)``:
  factory returning a started :class:`harness.postfix.PostfixInstance` relaying every
  message to ``sink``; with ``milter_port`` it uses ``smtpd_milters=inet:127.0.0.1:PORT``.
* ``sending_postfix(receiving=None, **kw)``: factory returning a started instance relaying
  everything to ``receiving`` (a new milter-less receiving instance when None), except
  mail for ``AUTHOR_DOMAIN`` which goes to ``author_sink``.
* ``postfix_factory(name, **kw)``: low-level factory for any other topology.

All tests in this directory get the ``postfix`` marker and are skipped (with the reason)
when Postfix cannot run here, except those marked ``sendmail`` (a private Sendmail instead,
see ``harness/sendmail.py``; they skip when it cannot run).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = Path(__file__).resolve().parents[1]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

from harness.postfix import (  # noqa: E402
    AUTHOR_DOMAIN,
    PostfixInstance,
    make_traversable,
    unavailable_reason,
)
from harness.sink import SmtpSink  # noqa: E402

_HERE = Path(__file__).resolve().parent
_UNAVAILABLE: list[str | None] = []


def _reason() -> str | None:
    if not _UNAVAILABLE:
        _UNAVAILABLE.append(unavailable_reason())
    return _UNAVAILABLE[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE not in Path(str(item.path)).resolve().parents:
            continue
        if item.get_closest_marker("sendmail"):
            continue  # needs no Postfix (tests/harness/sendmail.py says what it needs)
        item.add_marker(pytest.mark.postfix)
        reason = _reason()
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"_rep_{rep.when}", rep)
    return rep


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"_rep_{w}", None), "failed", False)
        for w in ("setup", "call")
    )


@pytest.fixture
def postfix_base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Directory for the test's Postfix instances, linked as ``tmp_path/postfix``.

    Not inside pytest's tmp tree: the unprivileged ``postfix`` user must traverse every
    ancestor, and any pytest session starting on the machine resets
    ``/tmp/pytest-of-root`` to mode 0700 (which broke running instances mid-test).
    Removed after a passing test, kept (path printed) after a failure.
    """
    base = Path(tempfile.mkdtemp(prefix="drossel-pf-"))
    base.chmod(0o755)
    make_traversable(base)
    (tmp_path / "postfix").symlink_to(base)
    yield base
    if _failed(request):
        print(f"===== Postfix instance files kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postfix_factory(
    request: pytest.FixtureRequest, postfix_base: Path
) -> Iterator[Callable[..., PostfixInstance]]:
    reason = _reason()
    if reason:
        pytest.skip(reason)
    instances: list[PostfixInstance] = []

    def make(name: str, **kwargs: Any) -> PostfixInstance:
        inst = PostfixInstance(postfix_base, name, **kwargs)
        instances.append(inst)
        return inst.start()

    yield make

    failed = _failed(request)
    for inst in reversed(instances):
        try:
            if failed:
                # shown under "Captured stdout teardown" in the failure report
                print(f"===== {inst!r} queue: {inst.queue() if inst.is_running() else '-'}")
                print(f"===== {inst.log_file}\n{inst.log_tail(80)}")
        finally:
            inst.stop()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(name="sink") as s:
        yield s


@pytest.fixture
def author_sink() -> Iterator[SmtpSink]:
    with SmtpSink(name="author") as s:
        yield s


@pytest.fixture
def receiving_postfix(
    postfix_factory: Callable[..., PostfixInstance], sink: SmtpSink
) -> Callable[..., PostfixInstance]:
    counter = iter(range(1, 100))

    def make(
        milter_port: int | None = None,
        *,
        milter_default_action: str = "tempfail",
        **kwargs: Any,
    ) -> PostfixInstance:
        kwargs.setdefault("relayhost", sink.next_hop)
        return postfix_factory(
            f"recv{next(counter)}",
            milter=f"inet:127.0.0.1:{milter_port}" if milter_port else None,
            milter_default_action=milter_default_action,
            **kwargs,
        )

    return make


@pytest.fixture
def sending_postfix(
    postfix_factory: Callable[..., PostfixInstance],
    receiving_postfix: Callable[..., PostfixInstance],
    author_sink: SmtpSink,
) -> Callable[..., PostfixInstance]:
    counter = iter(range(1, 100))

    def make(receiving: PostfixInstance | None = None, **kwargs: Any) -> PostfixInstance:
        if receiving is None:
            receiving = receiving_postfix()
        transports = {AUTHOR_DOMAIN: f"smtp:{author_sink.next_hop}"}
        transports.update(kwargs.pop("transports", {}))
        return postfix_factory(
            f"send{next(counter)}",
            relayhost=receiving.next_hop,
            transports=transports,
            **kwargs,
        )

    return make
