"""vpdesk: the push-to-talk dispatch console."""
