"""Results people act on: evaluation against known labels and the triage report."""
