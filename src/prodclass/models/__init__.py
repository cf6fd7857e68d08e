"""Model families behind one interface and a small factory (see registry.py)."""
