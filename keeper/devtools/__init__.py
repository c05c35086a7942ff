"""Development tooling: Vyper compilation with a cache, anvil processes, deployments and scenarios.

Used by the test-suite, `keeper demo` and the benchmarks; never imported by the daemon's hot path.
"""
