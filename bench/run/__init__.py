"""The run path: spec, registry, runner and worker, scenarios, timed loop, stats, records."""
