"""The report layer: reading finished runs' results, tables, figures, and finishing sweeps."""
