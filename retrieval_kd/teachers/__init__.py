"""Teachers: anything that scores (query, passage) pairs, from one spec."""
