"""Face analysis behind one small interface: find the faces in a photo, place five landmarks on
each, and embed each face so two crops of one person can be compared (identity similarity
between an input face and its restored version)."""
