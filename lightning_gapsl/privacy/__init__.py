"""Smashed-data leakage: metrics, the server's inversion attackers, defenses, and the
evaluation run after training (``privacy=off|fast|full``; docs/explanations/privacy.md)."""
