"""Generator backends behind one protocol."""
