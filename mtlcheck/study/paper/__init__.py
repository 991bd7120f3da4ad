"""The paper's results and findings: its tables (`tables`), the reproduced study with its
uncertainty (`reproduced`), the claims as predicates (`claims`) and their verdicts (`verdicts`);
from stored runs (`runs`): our tables (`results`), their marks against the Baseline (`marks`),
their Markdown, CSV and JSON (`render`), Figures 3-5 (`figures`) and the report (`reports`)."""
