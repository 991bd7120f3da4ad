"""The paper's claims as predicates over result tables (§3.1, §3.2, §4, §5.4, §5.5, §6, and the
conclusions of the earlier version, arXiv:2402.03557).

A predicate takes a mapping of `ResultTable`s keyed like the paper's files ('table1' ... 'table7',
plus 'figure5' for our runs: the final FD per method, which the paper only plots) and returns a
`Verdict` whose evidence names the cells it used. The same predicates run on the paper's own
numbers (`mtlcheck.study.paper.published_tables.load_paper_tables()`), where their verdict is the verdict, and on our
reproduced tables, where `mtlcheck.study.paper.verdicts` runs them over a region of the seed means and decides
only when they agree everywhere in it (holds / contradicted / inconclusive).

Each claim is registered next to its predicate, in the module of its paper section (`benchmark_results`,
`surrogate`, `measures`, `conclusions`, `published`), with `@claim(id=..., section=...,
statement=..., source_tables=..., notes=..., named=...)` over the `def`; `CLAIMS` lists them in the order
registered, which is the paper's order (§3.1 to §6, then the earlier version's conclusions and the
as-published readings).

Which runs feed which table. On the paper's datasets: MetaGraspNet → Tables 1, 4, 5 (and Figure 5,
which the paper plots on MetaGraspNet, §5.4), CityScapes → Tables 2, 6, NYU-v2 → Tables 3, 7 (each
benchmark's `paper_tables`). On the embedded analogs generated from scikit-learn's digits
(`mtlcheck.study.benchmarks.EMBEDDED_ANALOGS`; `mtlcheck reproduce --benchmark all` runs the three
into one store and judges every claim once over their tables, `mtlcheck.study.paper.reports.claim_tables`):

| table                      | embedded analog   | stands in for |
|----------------------------|-------------------|---------------|
| table1, table4, table5, figure5 | digits-instance | MetaGraspNet |
| table2, table6             | digits-dense      | CityScapes    |
| table3, table7             | digits-nyu        | NYU-v2        |

A report of one benchmark alone takes 'figure5' from that benchmark's runs (the default study:
digits-dense); claims whose tables it does not give are "not evaluable" and say which they need,
unless the tables it gives already contradict them ("CosReg is top-3 on CityScapes and NYU-v2" is
false if it is not on the CityScapes analog; `mtlcheck.study.paper.verdicts`).

Readings fixed once, from the paper's own wording:
- "gain over the baseline" on a metric: strictly better than the Baseline row. The 0.01 band of
  Table 1's caption cannot be what §3.1 means: §3.1 lists GradVac although two of its cells are
  printed "–" (VMask mAP 0.521, AMask mAP 0.495 vs 0.518, 0.490).
- "top 3": competition rank ≤ 3 among the methods of the dataset, the baseline excluded.
- "majority of the metrics": at least half (§3.1: "a majority (≥3)" of 6).
- MetaGraspNet methods are Table 1's parameter-level rows plus the feature-level rows derived
  from Table 4 (`mtlcheck.study.paper.result_table.apply_relative_change`), since §3.1 ranks "(rep) MGDA".
"""

import importlib

from mtlcheck.study.paper.claims import registry
from mtlcheck.study.paper.claims.registry import Claim, ClaimNotEvaluable, Tables, Verdict, claim

# each section module registers its claims when imported: imported here in the paper's order
for _section in ("benchmark_results", "surrogate", "measures", "conclusions", "published"):
    importlib.import_module(f"{__name__}.{_section}")

__all__ = ["CLAIMS", "Claim", "ClaimNotEvaluable", "Tables", "Verdict", "claim", "claim_by_id"]

CLAIMS: tuple[Claim, ...] = registry.close()  # every claim, in the order registered (imports above: §3 to §6)


def claim_by_id(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(claim_id)
