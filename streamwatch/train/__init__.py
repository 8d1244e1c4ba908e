"""Training side: torch lives only in this package (install the ``train`` extra)."""
