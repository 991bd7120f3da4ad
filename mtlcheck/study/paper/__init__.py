"""The paper and our reproduction of it, each side named as such: the paper's published numbers
(`published_tables`) in the table type both sides share (`result_table`); from stored runs
(`runs`: selected and grouped once), our tables (`our_tables`) and our study with its uncertainty
(`our_study`), their marks against the Baseline (`marks`), their Markdown, CSV and JSON (`render`),
Figures 3-5 (`figures`) and the report (`reports`); the claims as predicates (`claims`) and their
verdicts on either side (`verdicts`)."""
