"""The digits world plugin for ugd."""
