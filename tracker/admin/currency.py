"""Exchange rates (admin)."""
