"""`qis evidence`: the measurements behind the project's claims (docs/EVIDENCE.md)."""
