"""The hotline command line: set-up, services, users, tickets."""
