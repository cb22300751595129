"""Process-level plumbing shared by the adapters: settings, logging."""
