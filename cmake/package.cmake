# Packaging (cpack -G DEB): filled in below.
