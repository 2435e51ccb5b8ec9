"""The end-to-end demo: the topology, five downstreams, simulated orders, the proof."""
