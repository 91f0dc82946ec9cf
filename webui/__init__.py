"""webui."""
