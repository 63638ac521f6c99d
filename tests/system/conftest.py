"""Fixtures for system tests: a lab network of namespaces, skipped where none can be made."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from tests.system.internet import Internet, missing_tools
from tests.system.netlab import Network
from tests.system.netns import NetlabError, unavailable_reason

PREFIX = "mmlab"


@pytest.fixture(scope="session")
def netns_support() -> None:
    """Skip (with the exact reason) where network namespaces cannot be made."""
    reason = unavailable_reason(PREFIX)
    if reason:
        pytest.skip(reason)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _opened(build: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """make(**kwargs) -> build(**kwargs) entered; each closed (newest first) when the test
    ends. While it runs, SIGTERM raises KeyboardInterrupt so that a killed test run still
    tears its namespaces down."""
    labs: list[Any] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)

    def make(**kwargs: Any) -> Any:
        lab = build(**kwargs)
        lab.__enter__()
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        errors = []
        for lab in reversed(labs):
            try:
                lab.close()
            except NetlabError as exc:
                errors.append(exc)
        signal.signal(signal.SIGTERM, previous)
        if errors:
            raise errors[0]


@pytest.fixture
def network_factory(netns_support: None) -> Iterator[Callable[..., Network]]:
    """make(n_hosts=5, offload=False) -> an open Network, closed when the test ends."""
    yield from _opened(lambda **kwargs: Network(prefix=PREFIX, **kwargs))


@pytest.fixture
def network(network_factory: Callable[..., Network]) -> Network:
    """Five hosts (h0 meant as the curator, h1..h4 as clients) on one switch."""
    return network_factory(n_hosts=5)


@pytest.fixture
def internet_factory(netns_support: None) -> Iterator[Callable[..., Internet]]:
    """make(homes=DEFAULT_HOMES, public=("dht", "stranger")) -> an open Internet, closed
    when the test ends (SIGTERM included, as network_factory)."""
    if reason := missing_tools():
        pytest.skip(reason)
    yield from _opened(Internet)


@pytest.fixture
def internet(internet_factory: Callable[..., Internet]) -> Internet:
    """Homes a and b (UPnP + NAT-PMP routers) and c (strict router), one host each, and the
    public hosts "dht" and "stranger"."""
    return internet_factory()
