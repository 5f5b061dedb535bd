"""placeholder until the service fixtures land."""
