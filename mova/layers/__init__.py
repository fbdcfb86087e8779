"""Building blocks shared by several MoVA modules."""
