"""A run folder's life: ``folder`` (its layout; opening, marking and reading a run), ``records`` (its
typed JSON records, declared field by field) and ``ownership`` (one writer at a time)."""
