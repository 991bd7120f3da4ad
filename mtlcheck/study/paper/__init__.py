"""The paper's results and findings: its tables (`tables`), the reproduced study with its
uncertainty (`reproduced`), the claims as predicates (`claims`), their verdicts (`verdicts`) and
the report (`reports`)."""
