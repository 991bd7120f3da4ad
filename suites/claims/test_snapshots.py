"""Bitwise snapshots of our reproduced smoke tables (claims three ways, part c).

The reproduced CityScapes-like table (digits-dense: DE, SS, IS per method and level) and the
measures the ranking similarity ranks are computed by `mtlcheck sweep --portable` (the `reproduced`
fixture): CPU kernels that give bitwise the same numbers on every x86-64 CPU, whatever its vector
units, BLAS code path or thread count. So they are compared with the committed snapshot exactly
(rtol 0, atol 0; every bit is stored). In the default mode the same runs differ between CPUs (other
vector kernels: AVX2 against AVX-512 moved every row, EW included, and one GDS cell from 0.14 to
0.004 — smoke runs are 12 steps of a chaotic trajectory); CI also runs this file under a simulated
other CPU (.ci/run). The paper's own numbers live in reference/ as read-only data: the snapshot
extension refuses to write there, so `--snapshot-update` can never replace the paper with our
numbers. Update after an intended change with `pytest suites/claims/test_snapshots.py --snapshot-update`.
"""

import math
from types import SimpleNamespace

import pytest

from mtlcheck.testing.snapshots import TolerantJSONExtension, approx, close

pytestmark = [pytest.mark.claim]


def as_dict(table):
    return {
        f"{row.method}/{row.level}": {
            c: (None if row.values.get(c) is None else float(row.values[c])) for c in table.columns
        }
        for row in table.rows
    }


@pytest.mark.parametrize("name", ["table2", "final_measures"])
def test_reproduced_smoke_table_matches_snapshot(reproduced, snapshot, name):
    if reproduced.budget != "smoke" or "digits-dense" not in reproduced.per_benchmark:
        pytest.skip("snapshots pin the embedded digits-dense benchmark at the smoke budget")
    table = reproduced.per_benchmark["digits-dense"][name]
    assert snapshot(extension_class=TolerantJSONExtension) == approx(as_dict(table), rtol=0, atol=0)


def test_tolerance_compares_numbers_and_structure():
    assert close({"a": [1.0, None, "x"]}, {"a": [1.0005, None, "x"]}, 1e-3, 0) is None
    assert close({"a": 1.0}, {"a": 1.01}, 1e-3, 0) == "$.a: 1.0 vs 1.01 (rtol=0.001, atol=0)"
    assert "keys differ" in close({"a": 1}, {"b": 1}, 0, 0)
    assert "lengths" in close([1, 2], [1], 0, 0)
    assert close({"__float__": "nan"}, {"__float__": "nan"}, 0, 0) is None
    assert close(math.nan, 1.0, 1.0, 1.0) is not None


def test_snapshot_update_can_never_write_the_papers_reference(tmp_path):
    target = tmp_path / "reference" / "paper" / "table1.json"
    collection = SimpleNamespace(location=str(target))
    with pytest.raises(PermissionError, match="reference"):
        TolerantJSONExtension.write_snapshot_collection(snapshot_collection=collection)
    assert not target.exists()


def test_approx_needs_a_stated_tolerance():
    with pytest.raises(ValueError, match="rtol"):
        approx({}, rtol=-1, atol=0)
