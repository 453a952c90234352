"""Transactional and client ids: unique per host (instance id) and worker slot, stable
across restarts, chosen by --instance-id, STREAMFER_INSTANCE_ID or the host name."""

from __future__ import annotations

import socket

import pytest

from streams.worker.instance import (
    INSTANCE_ENV,
    client_id,
    resolve_instance_id,
    transactional_id,
)


def test_two_hosts_running_the_same_slots_get_distinct_transactional_ids() -> None:
    ids = {transactional_id("fraud", host, slot) for host in ("a", "b") for slot in (0, 1)}
    assert len(ids) == 4
    assert transactional_id("fraud", "pod-7", 1) == "streamfer-fraud-pod-7-1"
    assert client_id("cards", "pod-7", 1) == "streamfer-cards-pod-7-1"


def test_the_same_slot_restarted_keeps_its_transactional_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(INSTANCE_ENV, raising=False)
    first = transactional_id("g", resolve_instance_id(), 0)
    assert transactional_id("g", resolve_instance_id(), 0) == first


def test_the_option_wins_over_the_environment_which_wins_over_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(INSTANCE_ENV, "from-env")
    assert resolve_instance_id("from-option") == "from-option"
    assert resolve_instance_id(None) == "from-env"
    monkeypatch.setenv(INSTANCE_ENV, "  ")
    monkeypatch.setattr(socket, "gethostname", lambda: "worker-5f6c9")
    assert resolve_instance_id(None) == "worker-5f6c9"


def test_characters_an_id_should_not_hold_are_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_instance_id("host a/1") == "host-a-1"
    monkeypatch.setattr(socket, "gethostname", lambda: "node1.example.com")
    monkeypatch.delenv(INSTANCE_ENV, raising=False)
    assert resolve_instance_id() == "node1.example.com"
    with pytest.raises(ValueError, match="no letter or digit"):
        resolve_instance_id("///")
