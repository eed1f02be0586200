"""Multiple-instance learning from slide (bag) labels: embed tiles once, train attention MIL."""
