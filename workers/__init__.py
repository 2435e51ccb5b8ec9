"""The downstream workers: consume, order, retry, dead-letter, apply once."""
