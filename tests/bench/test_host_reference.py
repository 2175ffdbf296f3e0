"""The host-speed reference: each part does the work it claims, and the figure is the sum of the parts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from everstream.bench import host


def test_reference_table_is_seeded_and_trades_like() -> None:
    a, b = host.reference_table(1000), host.reference_table(1000)
    assert a.equals(b)
    assert a.column_names == ["ts", "price", "qty", "symbol"]
    ts = a.column("ts").to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert set(a.column("symbol").to_pylist()) <= {f"SYM{i:03d}" for i in range(500)}
    assert not a.equals(host.reference_table(1000, seed=8))


def test_ipc_round_trip_gives_back_the_table() -> None:
    t = host.reference_table(200_000)  # several 64 k chunks
    got = host.ipc_round_trip(t)
    assert got.equals(t)
    assert got.num_rows == 200_000


def test_sorted_copy_sorts_without_touching_the_input() -> None:
    values = np.random.default_rng(1).integers(0, 1 << 40, 10_000)
    before = values.copy()
    out = host.sorted_copy(values)
    assert (out == np.sort(before)).all()
    assert (values == before).all()


def test_python_loop_against_a_closed_form() -> None:
    n = 1000
    expected = sum((i % 97) * 3 if (i % 97) & 1 else i % 97 for i in range(n)) + 97
    assert host.python_loop(n) == expected


def test_the_figure_is_the_sum_of_the_best_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "ROWS", 1 << 12)
    monkeypatch.setattr(host, "LOOP", 1000)
    got = host.host_reference(repeat=2)
    parts = got["host_reference_parts_ms"]
    assert isinstance(parts, dict) and set(parts) == {"ipc_lz4", "sort", "python"}
    assert got["host_reference_ms"] == pytest.approx(sum(parts.values()), abs=0.05)
    # a slower host (here: a part that sleeps) shows in the figure
    monkeypatch.setattr(host, "python_loop", lambda n: time.sleep(0.03))
    slow = host.host_reference(repeat=2)
    assert slow["host_reference_parts_ms"]["python"] >= 30
    assert slow["host_reference_ms"] > got["host_reference_ms"]


def test_repeat_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="repeat must be at least 1, got 0"):
        host.host_reference(repeat=0)
