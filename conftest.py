# The mtlcheck pytest plugin is registered by the package's `pytest11` entry point
# (mtlcheck.testing.plugin); install the package (see README) before running the suites.
