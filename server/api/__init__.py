"""The REST API under /api/: sign-in and tokens, the directory's management, the audit log."""
