"""pytest plugin shipped with mediacache: fixtures for plugin authors (real peers, playbooks)."""
