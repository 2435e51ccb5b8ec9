"""The simulation: planned orders, simulated traffic and handlers, for the demo, the benchmarks
and the tests. Production code never imports it."""
