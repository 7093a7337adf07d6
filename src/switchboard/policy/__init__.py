"""Who may call, what they may spend, what content may pass."""
