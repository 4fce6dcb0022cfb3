"""Reports of a probe run: terminal table, JSON, JUnit XML and a self-contained HTML page."""
