"""`orderbus`: the one installed command, over the bus's programs."""
