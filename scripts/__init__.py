"""Command-line scripts: install, demo, evaluation, benchmarks, dataset building."""
