"""prodclass: classify Rakuten France catalogue products into their 27 product-type codes."""

__version__ = "0.1.0"
