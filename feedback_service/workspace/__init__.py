"""The experience team's workspace (designers) and the managers' read-only scores page."""
