"""The order service: order store with a transactional outbox, the relay, simulated traffic."""
