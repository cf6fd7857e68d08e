"""Data layer: the challenge layout, validation, cleaning, splits and lazy loading."""
