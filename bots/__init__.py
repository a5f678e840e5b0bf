"""Chat adapters and the platform-neutral conversation layer. Never imports diffusers."""
