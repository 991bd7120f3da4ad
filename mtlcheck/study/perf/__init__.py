"""Performance benches: step time and memory of every method as a ratio to equal weighting
(`bench`) and the same model through the real TorchJD and LibMTL (`peers`)."""
