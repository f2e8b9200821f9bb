"""Content decoders: HTTP codings, forms, MIME, archives, Office, PDF, text normalisation."""
