"""Outside systems in: one module per system, each only translates into core facts."""
