"""Cost and analysis: prices, cost metrics, comparison, tables and reports."""
