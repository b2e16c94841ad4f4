"""Staff accounts, roles and the audit log: who may change what, and a record of every change."""
