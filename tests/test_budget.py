"""Memory budgets: parsing, the one cache rule, its split by weight, and the errors."""

import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pi2lab.budget import MemoryBudget, split_units
from pi2lab.errors import BudgetError, ConfigError


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0.5", MemoryBudget.share(0.5)),
        ("1.0", MemoryBudget.share(1.0)),
        ("50%", MemoryBudget.share(0.5)),
        ("12.5 %", MemoryBudget.share(0.125)),
        ("2GB", MemoryBudget.bytes(2 * 10**9)),
        ("512MiB", MemoryBudget.bytes(512 * 2**20)),
        ("1.5gib", MemoryBudget.bytes(3 * 2**29)),
        ("4096B", MemoryBudget.bytes(4096)),
    ],
)
def test_parse_reads_shares_and_bytes(text, want):
    assert MemoryBudget.parse(text) == want


@pytest.mark.parametrize("text", ["1", "2048", "1.5", "150%", "2XB", "", "-1GB", "GB", "0.5.1"])
def test_parse_refuses_ambiguous_and_bad_values(text):
    with pytest.raises(ConfigError, match="memory budget"):
        MemoryBudget.parse(text)


def test_exactly_one_of_bytes_and_share():
    with pytest.raises(ConfigError, match="exactly one"):
        MemoryBudget()
    with pytest.raises(ConfigError, match="exactly one"):
        MemoryBudget(total_bytes=1, ffn_share=0.5)
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        MemoryBudget.share(1.5)
    with pytest.raises(ConfigError, match="expected a MemoryBudget"):
        MemoryBudget.of(1024)  # an int could be bytes or 100%: refused


def test_cache_units_one_rule():
    kw = dict(minimum=1000, unit_bytes=100, units=50, ffns=4)
    assert MemoryBudget.share(0.3).cache_units(**kw) == 15
    # (9000 - 1000) bytes over 4 FFNs of 100-byte units: 20 each
    assert MemoryBudget.bytes(9000).cache_units(**kw) == 20
    assert MemoryBudget.bytes(10**9).cache_units(**kw) == 50  # at most every unit
    assert MemoryBudget.bytes(1000).cache_units(**kw) == 0
    with pytest.raises(BudgetError, match="below the minimum 1000 bytes \\(staging 1000\\)"):
        MemoryBudget.bytes(999).cache_units(**kw, parts={"staging": 1000})


def test_total_of_a_share_adds_the_minimum():
    assert MemoryBudget.share(0.25).total(1000, 4000) == 2000
    assert MemoryBudget.bytes(1234).total(1000, 4000) == 1234


def test_split_units_by_weight_capped():
    assert split_units(12, [3, 1, 0, 0], 16) == [9, 3, 0, 0]
    # the heaviest capped at 8: the rest goes to the others by weight
    assert split_units(16, [6, 1, 1, 0], 8) == [8, 4, 4, 0]
    # zero weights get units only once the others are full
    assert split_units(20, [1, 1, 0, 0], 8) == [8, 8, 2, 2]
    assert split_units(7, [0, 0, 0], 4) == [3, 2, 2]
    assert split_units(100, [1, 2], 10) == [10, 10]
    with pytest.raises(ConfigError, match="weights"):
        split_units(4, [1, -1], 4)
    with pytest.raises(ConfigError, match="weights"):
        split_units(4, [], 4)


@given(
    total=st.integers(0, 400),
    cap=st.integers(0, 60),
    weights=st.lists(st.floats(0, 1e6) | st.just(0.0), min_size=1, max_size=9),
)
# weights too small to scale (a denormal beside 1 or 2) once gave a capped FFN too many units
@example(total=3, cap=2, weights=[1.0, 5e-324])
@example(total=4, cap=2, weights=[0.0, 2.0, 5e-324])
@example(total=6, cap=2, weights=[0.0, 2.0, 5e-324])
def test_split_units_keeps_the_total_and_the_cap(total, cap, weights):
    units = split_units(total, weights, cap)
    assert sum(units) == min(total, cap * len(weights))
    assert all(0 <= u <= cap for u in units)
    for (wi, ui), (wj, uj) in itertools.product(zip(weights, units, strict=True), repeat=2):
        if wi > wj:  # a heavier FFN never gets fewer units
            assert ui >= uj
