"""Face restoration back-ends behind one small interface."""
