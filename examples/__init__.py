"""Small, tested integrations of the producers with common frameworks."""
