"""The human side: projects, labels, items, annotations, leases, budgets, imports and the UI."""
