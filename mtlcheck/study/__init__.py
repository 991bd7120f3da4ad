"""The paper study, built on the library (`mtlcheck`): the benchmarks with their data, models and
evaluation, training, the results store and sweeps, the paper's tables, claims and reports, the
performance benches and the `mtlcheck` command. Its dependencies come with the `study` extra
(`pip install "mtlcheck[study]"`); nothing in the library imports from here.
"""

# the training budgets every benchmark defines (import-free here, so that the command starts at once)
BUDGETS = ("smoke", "small", "paper")

# the benchmarks' names (defined in `benchmarks.BENCHMARKS`; a test keeps the two equal), known without
# importing the study's dependencies: `mtlcheck list` names them in a library-only install, and a
# mistyped --benchmark is refused before anything heavy is imported
BENCHMARK_NAMES = ("digits-dense", "digits-instance", "digits-nyu", "cityscapes", "nyuv2", "metagraspnet")
