"""Application-layer parsers (sans-IO): reassembled bytes in, transactions/files/buffers out."""
