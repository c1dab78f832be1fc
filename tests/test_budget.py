"""Memory budgets: parsing, the one cache rule, and the errors."""

import pytest

from pi2lab.budget import MemoryBudget
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
