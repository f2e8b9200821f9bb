"""Detection: markers in every encoding, file and partial-document fingerprints, transmission policy.

The pipeline calls only :class:`detectors.engine.Detection` (docs/architecture.md); the rest are
its parts: ``matcher`` (Hyperscan and pyahocorasick behind one interface), ``variants`` (the
byte forms of a marker), ``markers`` (compiled marker views), ``signatures`` (signature files),
``filehash`` and ``partial`` (fingerprints), ``policy`` (findings -> decisions), ``alert`` (the
EVE alert). See docs/signatures.md.
"""
